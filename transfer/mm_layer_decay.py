"""Layer-wise learning-rate decay for ViT backbones (BEiT's rule, as iBOT uses it), for mmengine.

Registered as ``AttMaskLayerDecayOptimWrapperConstructor`` in mmengine's
``OPTIM_WRAPPER_CONSTRUCTORS`` (mmdet's and mmseg's registries find it through their parent)::

    optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
                         constructor='AttMaskLayerDecayOptimWrapperConstructor',
                         paramwise_cfg=dict(layer_decay_rate=0.75))

Rule (BEiT ``layer_decay_optimizer_constructor.py``, copied by iBOT for COCO and ADE20K), for a
ViT of depth L held at ``backbone.vit``: layer id 0 for ``cls_token``, ``pos_embed``,
``patch_embed``, ``reg_token`` and ``mask_token``; i + 1 for ``blocks.i``; L + 1 for everything else
(final norm, adapter, neck, heads). A parameter of layer id l trains with
``lr = base_lr * rate ** (L + 1 - l)``. Weight decay is 0 for 1-D parameters and biases, the
base value otherwise. Note: the reference also lists ``pos_embed`` / ``cls_token`` as no-decay but
compares them with prefixed names (``backbone.pos_embed``), so that test never matches and they
are decayed; we reproduce what the reference runs (they are decayed). Frozen parameters are skipped.
"""

from __future__ import annotations

import logging
from typing import Any

from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

log = logging.getLogger(__name__)

VIT_PREFIX = "backbone.vit."
EMBEDDING_NAMES = ("cls_token", "pos_embed", "reg_token", "mask_token")


def layer_id(name: str, depth: int, prefix: str = VIT_PREFIX) -> int:
    """Layer id of a parameter named ``name`` (full name in the model) for a ViT of ``depth`` blocks."""
    if name.startswith(prefix):
        rest = name[len(prefix):]
        if rest in EMBEDDING_NAMES or rest.startswith("patch_embed."):
            return 0
        if rest.startswith("blocks."):
            return int(rest.split(".")[1]) + 1
    return depth + 1


def lr_scale(layer: int, depth: int, rate: float) -> float:
    """``rate ** (depth + 1 - layer)``: 1 for the heads, ``rate ** (depth + 1)`` for the embeddings."""
    return float(rate ** (depth + 1 - layer))


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim == 1 or name.endswith(".bias")


def layer_decay_groups(model: nn.Module, base_lr: float, base_wd: float, rate: float,
                       depth: int | None = None) -> list[dict[str, Any]]:
    """Parameter groups ``{params, lr, weight_decay, lr_scale, group_name, param_names}`` for ``model``.

    ``depth`` defaults to ``len(model.backbone.vit.blocks)``.
    """
    if depth is None:
        depth = len(model.backbone.vit.blocks)  # type: ignore[union-attr]
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lid = layer_id(name, depth)
        no_decay = is_no_decay(name, param)
        key = f"layer_{lid}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            scale = lr_scale(lid, depth, rate)
            groups[key] = {"params": [], "param_names": [], "lr": base_lr * scale, "lr_scale": scale,
                           "weight_decay": 0.0 if no_decay else base_wd, "group_name": key}
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups, key=lambda k: (int(k.split("_")[1]), k))]


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(force=True)
class AttMaskLayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``paramwise_cfg``: ``layer_decay_rate`` (required), ``num_layers`` (default: the ViT's depth)."""

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = "", is_dcn_module: Any = None) -> None:
        cfg = self.paramwise_cfg
        if "layer_decay_rate" not in cfg:
            raise ValueError("AttMaskLayerDecayOptimWrapperConstructor needs paramwise_cfg.layer_decay_rate")
        rate = float(cfg["layer_decay_rate"])
        depth = cfg.get("num_layers")
        groups = layer_decay_groups(module, float(self.base_lr), float(self.base_wd or 0.0), rate,
                                    None if depth is None else int(depth))
        for g in groups:
            log.debug("%s: %d tensors, lr %.3g (x%.4f), wd %.3g", g["group_name"], len(g["params"]), g["lr"],
                      g["lr_scale"], g["weight_decay"])
        log.info("layer-wise lr decay %.3g: %d parameter groups, lr scale %.4g .. 1", rate, len(groups),
                 min(g["lr_scale"] for g in groups) if groups else 1.0)
        params.extend(groups)
