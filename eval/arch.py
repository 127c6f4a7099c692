"""ViT architectures: inference from checkpoint tensors, short names, and building timm models.

The backbone is always timm's ``VisionTransformer`` configured as the DINO / iBOT reference ViT:
pre-norm blocks, qkv bias, LayerNorm eps 1e-6, a CLS token whose position is part of
``pos_embed``, final norm, no classifier (``num_classes=0``) and dynamic image size (position
embeddings resampled bicubically for other input sizes, as the reference's
``interpolate_pos_encoding``).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import torch
from torch import nn

from .errors import BadInput

# Short names as the reference code uses them (vision_transformer.py of DINO / iBOT).
SHORT_NAMES: dict[str, tuple[int, int, int]] = {  # name -> (embed_dim, depth, num_heads)
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
}
# Number of heads of the standard widths (ViT / DeiT / DINOv2 tables).
STANDARD_HEADS: dict[int, int] = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1536: 24}


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to build the backbone; derived from shapes or given by name."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    img_size: int = 224
    in_chans: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    reg_tokens: int = 0
    no_embed_class: bool = False
    init_values: float | None = None  # LayerScale, when the checkpoint has ls*.gamma

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def name(self) -> str:
        """A readable name: ``vit_small_patch16_224`` for the standard sizes, else the dimensions."""
        for short, (dim, depth, heads) in SHORT_NAMES.items():
            if (self.embed_dim, self.depth, self.num_heads) == (dim, depth, heads) and self.mlp_ratio == 4.0:
                base = short
                break
        else:
            base = f"vit_d{self.embed_dim}_l{self.depth}_h{self.num_heads}"
        name = f"{base}_patch{self.patch_size}_{self.img_size}"
        if self.reg_tokens:
            name += f"_reg{self.reg_tokens}"
        return name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spec_from_name(name: str, patch_size: int | None = None, img_size: int | None = None) -> ArchSpec:
    """Parse ``vit_small`` (+ ``patch_size``), ``vit_small_patch16[_224]`` or our ``vit_d128_l4_h2_patch4_32``."""
    m = re.fullmatch(r"(vit_(?:tiny|small|base|large))(?:_patch(\d+))?(?:_(\d+))?", name)
    if m:
        dim, depth, heads = SHORT_NAMES[m.group(1)]
        p = int(m.group(2)) if m.group(2) else (patch_size or 16)
        size = int(m.group(3)) if m.group(3) else (img_size or 224)
        if patch_size is not None and m.group(2) and patch_size != p:
            raise BadInput(None, f"--arch {name} has patch size {p} but --patch-size is {patch_size}")
        return ArchSpec(embed_dim=dim, depth=depth, num_heads=heads, patch_size=p, img_size=size)
    m = re.fullmatch(r"vit_d(\d+)_l(\d+)_h(\d+)(?:_patch(\d+))?(?:_(\d+))?(?:_reg(\d+))?", name)
    if m:
        p = int(m.group(4)) if m.group(4) else (patch_size or 16)
        size = int(m.group(5)) if m.group(5) else (img_size or 224)
        return ArchSpec(embed_dim=int(m.group(1)), depth=int(m.group(2)), num_heads=int(m.group(3)),
                        patch_size=p, img_size=size, reg_tokens=int(m.group(6) or 0))
    return _spec_from_timm_name(name, patch_size, img_size)


def _spec_from_timm_name(name: str, patch_size: int | None, img_size: int | None) -> ArchSpec:
    import timm

    if name not in timm.list_models("vit_*"):
        known = ", ".join([*SHORT_NAMES, "vit_d<dim>_l<depth>_h<heads>_patch<p>_<size>", "timm vit_* names"])
        raise BadInput(None, f"unknown architecture {name!r} (known: {known})")
    model = timm.create_model(name, pretrained=False, num_classes=0)
    if getattr(model, "global_pool", "token") != "token" or not hasattr(model, "blocks"):
        raise BadInput(None, f"architecture {name!r} is not a CLS-token ViT (global_pool={model.global_pool!r})")
    spec = spec_from_state_dict(model.state_dict(), source=name)
    if patch_size is not None and patch_size != spec.patch_size:
        raise BadInput(None, f"--arch {name} has patch size {spec.patch_size} but --patch-size is {patch_size}")
    return replace(spec, img_size=img_size or spec.img_size)


def _block_indices(keys: list[str]) -> list[int]:
    found = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))}
    return sorted(found)


def heads_for_dim(embed_dim: int) -> int:
    """Number of heads from the standard table, else head dimension 64 (every standard ViT's)."""
    if embed_dim in STANDARD_HEADS:
        return STANDARD_HEADS[embed_dim]
    if embed_dim % 64 == 0:
        return embed_dim // 64
    if embed_dim % 32 == 0:
        return embed_dim // 32
    raise BadInput(None, f"cannot infer the number of heads for embed dim {embed_dim}; pass --arch")


def spec_from_state_dict(sd: dict[str, torch.Tensor], source: str = "checkpoint",
                         num_heads: int | None = None) -> ArchSpec:
    """Infer the architecture from backbone tensor shapes (keys already stripped of prefixes)."""
    keys = list(sd)
    if "patch_embed.proj.weight" not in sd:
        raise BadInput(source, "no patch_embed.proj.weight: not a ViT backbone state dict")
    w = sd["patch_embed.proj.weight"]
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise BadInput(source, f"patch_embed.proj.weight has shape {list(w.shape)}, expected [D, C, p, p]")
    embed_dim, in_chans, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
    blocks = _block_indices(keys)
    if not blocks or blocks != list(range(len(blocks))):
        raise BadInput(source, f"transformer blocks are missing or not numbered 0..n-1 (found {blocks[:5]}...)")
    depth = len(blocks)
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    mlp_ratio = float(fc1.shape[0]) / embed_dim if fc1 is not None else 4.0
    class_token = "cls_token" in sd
    reg_tokens = int(sd["reg_token"].shape[1]) if "reg_token" in sd else 0
    init_values = 1.0 if "blocks.0.ls1.gamma" in sd else None
    img_size = 224
    no_embed_class = False
    if "pos_embed" in sd:
        n_pos = int(sd["pos_embed"].shape[1])
        prefix = int(class_token) + reg_tokens
        for n_prefix_in_pos, no_embed in ((prefix, False), (0, True), (int(class_token), False)):
            grid = math.isqrt(max(n_pos - n_prefix_in_pos, 0))
            if grid > 0 and grid * grid == n_pos - n_prefix_in_pos:
                img_size = grid * patch
                no_embed_class = no_embed
                break
        else:
            raise BadInput(source, f"pos_embed has {n_pos} positions: not a square grid plus prefix tokens")
    heads = num_heads if num_heads is not None else heads_for_dim(embed_dim)
    return ArchSpec(embed_dim=embed_dim, depth=depth, num_heads=heads, patch_size=patch, img_size=img_size,
                    in_chans=in_chans, mlp_ratio=mlp_ratio, qkv_bias="blocks.0.attn.qkv.bias" in sd,
                    class_token=class_token, reg_tokens=reg_tokens, no_embed_class=no_embed_class,
                    init_values=init_values)


def build_vit(spec: ArchSpec, drop_path_rate: float = 0.0, **overrides: Any) -> nn.Module:
    """A timm ``VisionTransformer`` equal to the reference ViT for ``spec`` (no classifier head)."""
    from timm.models.vision_transformer import VisionTransformer

    kwargs: dict[str, Any] = dict(
        img_size=spec.img_size, patch_size=spec.patch_size, in_chans=spec.in_chans, num_classes=0,
        global_pool="token" if spec.class_token else "avg", embed_dim=spec.embed_dim, depth=spec.depth,
        num_heads=spec.num_heads, mlp_ratio=spec.mlp_ratio, qkv_bias=spec.qkv_bias,
        class_token=spec.class_token, reg_tokens=spec.reg_tokens, no_embed_class=spec.no_embed_class,
        init_values=spec.init_values, dynamic_img_size=True, drop_path_rate=drop_path_rate,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), fc_norm=False,
    )
    kwargs.update(overrides)
    return VisionTransformer(**kwargs)


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int) -> torch.Tensor:
    """Bicubic interpolation of ``pos_embed`` [1, prefix + h*w, D] to ``new_grid`` (prefix rows kept)."""
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    n = grid.shape[1]
    old = math.isqrt(n)
    if old * old != n:
        raise ValueError(f"pos_embed grid of {n} positions is not square")
    if (old, old) == tuple(new_grid):
        return pos_embed
    dim = grid.shape[-1]
    grid = grid.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
    grid = nn.functional.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
