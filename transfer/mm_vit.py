"""The pre-trained ViT as an mmdet / mmseg backbone, with the BEiT / iBOT multi-level adapter.

Registered as ``AttMaskViT`` in mmdet's and mmseg's ``MODELS`` registries; configs reach it with
``custom_imports = dict(imports=['attmask.transfer.mm_vit', ...])``. The ViT is built by the
foundation's checkpoint import (:func:`attmask.eval.checkpoint.load_backbone`: any supported
format, strict key check, no fallback), so a detector or segmenter fine-tunes exactly the weights
that every other task evaluates. ``pos_embed`` is interpolated (bicubic) to the training
resolution ``img_size`` once at load, as iBOT's backbone does (its parameter lives at that grid
and is fine-tuned there); at run time timm's dynamic-size path resamples it to each input's grid.

Forward (iBOT ``evaluation/{object_detection,semantic_segmentation}/mmcv_custom/register_backbone.py``):
``x`` [B, 3, H, W] -> patch embedding + position embedding -> blocks; the patch tokens of blocks
``out_indices`` (default (3, 5, 7, 11) for depth 12, the same fractions of depth otherwise),
optionally through the final norm (``out_with_norm``; iBOT: off for COCO, on for ADE20K), reshaped
to [B, D, H/p, W/p]; then the adapter (BEiT's, kept by iBOT; not ViTDet's simple pyramid) makes
four scales. Patch 16: transposed conv ×4 (ConvT 2×2 s2 -> SyncBN -> GELU -> ConvT 2×2 s2),
transposed conv ×2, identity, max-pool ½ -> strides 4, 8, 16, 32. Patch 8: ConvT ×2, identity,
max-pool ½, max-pool ¼ -> the same strides. ``with_pyramid=False`` returns the four stride-p maps
(the linear segmentation head). ``frozen=True`` freezes the whole ViT and keeps it in eval mode
(iBOT's linear preset, ``frozen_stages=12``). Drop-path rates rise linearly from 0 to
``drop_path_rate`` over the blocks (stochastic depth, as timm / iBOT).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.utils.checkpoint as activation_checkpoint
from mmengine.model import BaseModule
from timm.layers import DropPath
from torch import nn

from attmask.eval.arch import resample_pos_embed
from attmask.eval.checkpoint import CheckpointInfo, load_backbone
from attmask.eval.errors import BadInput

log = logging.getLogger(__name__)

REFERENCE_DEPTH = 12
REFERENCE_OUT_INDICES = (3, 5, 7, 11)


def default_out_indices(depth: int) -> tuple[int, ...]:
    """Blocks (3, 5, 7, 11) of a 12-block ViT, or the same fractions (1/3, 1/2, 2/3, 1) of ``depth``.

    ViT-L (24 blocks) -> (7, 11, 15, 23), as BEiT's configs; 4 blocks -> (0, 1, 2, 3).
    """
    out = tuple(max(0, round((i + 1) * depth / REFERENCE_DEPTH) - 1) for i in REFERENCE_OUT_INDICES)
    if len(set(out)) != len(out):
        raise BadInput(None, f"a ViT of depth {depth} is too shallow for four distinct output blocks")
    return out


def _to_hw(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    hw = tuple(int(s) for s in size)
    if len(hw) == 1:
        return (hw[0], hw[0])
    if len(hw) != 2:
        raise BadInput(None, f"img_size must be an int or (height, width), got {size!r}")
    return (hw[0], hw[1])


class MultiLevelAdapter(nn.Module):
    """Four maps [B, D, h, w] at stride p -> maps at strides 4, 8, 16, 32 (BEiT / iBOT ``fpn1..4``).

    ``norm_cfg``: the norm between the two transposed convs (default SyncBN, as the reference;
    mmengine turns it into BatchNorm in a single process; use ``dict(type='BN')`` for CPU process
    groups, where SyncBN cannot run).
    """

    def __init__(self, embed_dim: int, patch_size: int, norm_cfg: dict | None = None) -> None:
        super().__init__()
        if patch_size == 16:
            from mmcv.cnn import build_norm_layer

            self.fpn1 = nn.Sequential(
                nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
                build_norm_layer(dict(norm_cfg or {"type": "SyncBN"}), embed_dim)[1],
                nn.GELU(),
                nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
            )
            self.fpn2 = nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2)
            self.fpn3 = nn.Identity()
            self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)
        elif patch_size == 8:
            self.fpn1 = nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2)
            self.fpn2 = nn.Identity()
            self.fpn3 = nn.MaxPool2d(kernel_size=2, stride=2)
            self.fpn4 = nn.MaxPool2d(kernel_size=4, stride=4)
        elif patch_size == 4:
            # the same target strides from a stride-4 map (small-image ViTs, e.g. the demo's 32-px models):
            # identity, then max-pools ½, ¼, ⅛ — the patch-8 rule carried one octave down
            self.fpn1 = nn.Identity()
            self.fpn2 = nn.MaxPool2d(kernel_size=2, stride=2)
            self.fpn3 = nn.MaxPool2d(kernel_size=4, stride=4)
            self.fpn4 = nn.MaxPool2d(kernel_size=8, stride=8)
        else:
            raise BadInput(None, f"the multi-level adapter is defined for patch 16, 8 or 4, not {patch_size}")

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        ops = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
        return tuple(op(f) for op, f in zip(ops, feats))


class AttMaskViT(BaseModule):
    """ViT backbone for mmdet / mmseg, loaded strictly from a pre-trained checkpoint.

    Args:
        ckpt: checkpoint path (any format :func:`load_backbone` reads) or ``random:ARCH``.
        checkpoint_key: network inside a pre-training checkpoint (default: teacher).
        arch, patch_size: architecture override, as ``--arch`` / ``--patch-size``.
        img_size: training resolution, int or (H, W): ``pos_embed`` is interpolated to its grid.
        out_indices: blocks whose outputs feed the adapter (default: :func:`default_out_indices`).
        out_with_norm: pass those outputs through the ViT's final norm.
        with_pyramid: apply :class:`MultiLevelAdapter` (False: four stride-p maps).
        pyramid_norm_cfg: norm inside the adapter (default SyncBN).
        frozen: freeze the ViT (no gradients, eval mode).
        drop_path_rate: stochastic depth of the last block (linear from 0).
        with_cp: activation checkpointing per block while training (iBOT's ``use_checkpoint``).

    Output: a tuple of 4 maps [B, D, H / s, W / s], s = 4, 8, 16, 32 (patch 16 with the pyramid).
    """

    def __init__(self, ckpt: str | None = None, checkpoint_key: str | None = None, arch: str | None = None,
                 patch_size: int | None = None, img_size: int | Sequence[int] | None = None,
                 out_indices: Sequence[int] | None = None, out_with_norm: bool = False, with_pyramid: bool = True,
                 pyramid_norm_cfg: dict | None = None, frozen: bool = False, drop_path_rate: float = 0.0, with_cp: bool = False, seed: int = 0,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not ckpt:
            raise BadInput(None, "AttMaskViT needs model.backbone.ckpt (a checkpoint path or random:ARCH)")
        hw = _to_hw(img_size)
        square = hw is not None and hw[0] == hw[1]
        loaded = load_backbone(str(ckpt), checkpoint_key=checkpoint_key, arch=arch, patch_size=patch_size,
                               img_size=hw[0] if square else None, seed=seed)
        self.checkpoint_info: CheckpointInfo = loaded.info
        vit = loaded.model
        spec = loaded.info.arch
        if hw is not None and not square:
            _resample_to_grid(vit, hw, spec.patch_size, 0 if spec.no_embed_class else spec.num_prefix_tokens)
        self.embed_dim = spec.embed_dim
        self.patch_size = spec.patch_size
        self.num_prefix_tokens = spec.num_prefix_tokens
        self.depth = spec.depth
        self.out_indices = tuple(out_indices) if out_indices is not None else default_out_indices(spec.depth)
        if len(self.out_indices) != 4 or not all(0 <= i < spec.depth for i in self.out_indices):
            raise BadInput(None, f"out_indices must be 4 block indices in [0, {spec.depth}), got {self.out_indices}")
        self.out_with_norm = out_with_norm
        if not out_with_norm:
            vit.norm = nn.Identity()  # unused: iBOT replaces it too (its weights stay in the checkpoint)
        self.frozen = frozen
        self.with_cp = with_cp
        self.drop_path_rate = drop_path_rate
        set_drop_path(vit, drop_path_rate)
        self.vit = vit
        self.pyramid = MultiLevelAdapter(spec.embed_dim, spec.patch_size, pyramid_norm_cfg) if with_pyramid else None
        if frozen:
            for p in self.vit.parameters():
                p.requires_grad = False
        self.vit.train(False)
        log.info("AttMaskViT: %s, out_indices %s, out_with_norm %s, pyramid %s, frozen %s, drop_path %.3g",
                 spec.name, self.out_indices, out_with_norm, with_pyramid, frozen, drop_path_rate)

    def init_weights(self) -> None:
        """The ViT keeps its loaded weights (mmengine would otherwise call timm's ``init_weights``);
        the adapter keeps PyTorch's default initialisation, as in iBOT (its ``_init_weights`` touches
        only Linear and LayerNorm layers)."""
        self._is_init = True

    def train(self, mode: bool = True) -> AttMaskViT:
        super().train(mode)
        if self.frozen:
            self.vit.train(False)
        return self

    def block_tokens(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Tokens [B, prefix + h*w, D] after each block of ``out_indices`` (normed if ``out_with_norm``).

        ``x``: images [B, 3, H, W]; h, w = H // p, W // p.
        """
        vit = self.vit
        t = vit.patch_embed(x)
        t = vit._pos_embed(t)
        t = vit.patch_drop(t)
        t = vit.norm_pre(t)
        outs = []
        last = max(self.out_indices)
        for i, blk in enumerate(vit.blocks):
            if self.with_cp and self.training and t.requires_grad:
                t = activation_checkpoint.checkpoint(blk, t, use_reentrant=False)
            else:
                t = blk(t)
            if i in self.out_indices:
                outs.append(vit.norm(t))
            if i == last:
                break
        return outs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, _, h_img, w_img = x.shape
        h, w = h_img // self.patch_size, w_img // self.patch_size
        maps = [t[:, self.num_prefix_tokens:].transpose(1, 2).reshape(b, self.embed_dim, h, w).contiguous()
                for t in self.block_tokens(x)]
        if self.pyramid is None:
            return tuple(maps)
        return self.pyramid(maps)


def set_drop_path(vit: nn.Module, rate: float) -> None:
    """Stochastic depth: block i drops its residual branches with probability ``rate * i / (depth - 1)``."""
    depth = len(vit.blocks)
    rates = torch.linspace(0, rate, depth).tolist()
    for blk, r in zip(vit.blocks, rates):
        blk.drop_path1 = DropPath(r) if r > 0 else nn.Identity()
        blk.drop_path2 = DropPath(r) if r > 0 else nn.Identity()


def _resample_to_grid(vit: nn.Module, hw: tuple[int, int], patch_size: int, prefix_in_pos: int) -> None:
    """Interpolate ``pos_embed`` to the (H/p, W/p) grid of a non-square training size, in place."""
    grid = (hw[0] // patch_size, hw[1] // patch_size)
    with torch.no_grad():
        new = resample_pos_embed(vit.pos_embed.data, grid, prefix_in_pos)
    vit.pos_embed = nn.Parameter(new)
    vit.patch_embed.set_input_size(img_size=hw)
    log.info("pos_embed interpolated (bicubic) to the %dx%d grid of the training size %s", grid[0], grid[1], hw)


def _register() -> None:
    """Register in every installed OpenMMLab model registry (mmdet, mmseg)."""
    registered = []
    for module in ("mmdet.registry", "mmseg.registry"):
        try:
            registry = __import__(module, fromlist=["MODELS"]).MODELS
        except ImportError:
            continue
        registry.register_module(name="AttMaskViT", module=AttMaskViT, force=True)
        registered.append(module.split(".")[0])
    if not registered:
        raise ImportError("neither mmdet nor mmseg is installed: AttMaskViT has no registry to join")


_register()
