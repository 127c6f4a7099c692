"""The pre-training ViT: timm's ``VisionTransformer`` plus a mask token and the teacher's CLS-row attention.

The backbone is exactly the harness's :func:`attmask.eval.arch.build_vit` model (same keys, so every
checkpoint loads through ``attmask.eval.checkpoint``), with one extra parameter on the student:

- ``masked_embed`` [1, D], zero-initialised (iBOT / AttMask's name): it **replaces the patch
  embedding of masked tokens before the position embedding is added** (iBOT ``prepare_tokens``).

Local crops (and any other size) use timm's dynamic image size: the position embedding grid is
resampled bicubically (timm's ``resample_abs_pos_embed``, with antialiasing when shrinking) instead of
the reference's ``interpolate_pos_encoding`` (bicubic with a 0.1 offset, no antialiasing); the harness
extracts features through the same timm path, so training and evaluation agree.

AttMask needs the teacher's last-block CLS→patch attention, head-averaged, from the same forward pass
that produces the targets. Fused kernels (SDPA / flash) never return attention weights, so the last
block computes ``softmax(q_cls · Kᵀ / √d)`` from the CLS query and the keys **beside** the kernel:
O(T·d) per image instead of the O(T²·d) of a materialised attention matrix (timm's
``layers/attention.py`` makes the same split between its fused and explicit paths). As in the
reference (``attentions[:, :, 0, 1:]``) the softmax runs over all T keys (CLS included) and the
patch columns are kept, without renormalisation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from attmask.eval.arch import ArchSpec, build_vit

ATTN_IMPLS = ("fused", "explicit")


def build_backbone(spec: ArchSpec, *, drop_path_rate: float = 0.0, mask_token: bool = False,
                   attn_impl: str = "fused") -> VisionTransformer:
    """The harness ViT for ``spec`` with an optional zero-initialised ``masked_embed`` [1, D].

    ``attn_impl``: ``fused`` (SDPA) or ``explicit`` (softmax(QKᵀ/√d)V; faster on CPU with bf16,
    ../shared/reference/CPU-PRETRAINING.md). Weights are initialised by timm: trunc-normal 0.02 for the
    linear layers and the position embedding, as the reference ViT; the CLS token starts at N(0, 1e-6)
    where the reference draws trunc-normal 0.02 (trained, with weight decay, from the first step in both;
    measured on cifar10-mini, 192-d / 4 blocks: random-init teacher k-NN top1@k20 27.93 vs 28.28 with the
    reference's draw, mean of 4 seeds, within noise).
    """
    vit = build_vit(spec, drop_path_rate=drop_path_rate)
    if mask_token:
        vit.register_parameter("masked_embed", nn.Parameter(torch.zeros(1, spec.embed_dim)))
    set_attention_impl(vit, attn_impl)
    return vit


def set_attention_impl(vit: VisionTransformer, impl: str) -> None:
    """Switch every block between timm's fused (SDPA) and explicit attention paths."""
    if impl not in ATTN_IMPLS:
        raise ValueError(f"attention implementation {impl!r} is not one of {ATTN_IMPLS}")
    for blk in vit.blocks:
        blk.attn.fused_attn = impl == "fused"


def apply_mask_token(patches: torch.Tensor, masks: torch.Tensor, masked_embed: torch.Tensor) -> torch.Tensor:
    """Replace masked patch embeddings by the mask token.

    ``patches`` [B, h, w, D] (timm's NHWC patch embedding), ``masks`` [B, h, w] or [B, h·w] bool,
    ``masked_embed`` [1, D]. ``torch.where`` keeps the token in the graph even when nothing is masked
    (DDP then always sees its gradient).
    """
    b, h, w, d = patches.shape
    masks = masks.reshape(b, h, w, 1)
    return torch.where(masks, masked_embed.reshape(1, 1, 1, d).to(patches.dtype), patches)


def embed_tokens(vit: VisionTransformer, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
    """Tokens [B, prefix + h·w, D] entering the first block (mask token, then CLS + position embedding)."""
    x = vit.patch_embed(images)  # [B, h, w, D] (dynamic image size)
    if masks is not None:
        if not hasattr(vit, "masked_embed"):
            raise ValueError("this backbone has no mask token (built with mask_token=False)")
        x = apply_mask_token(x, masks, vit.masked_embed)
    x = vit._pos_embed(x)  # CLS token + position embedding interpolated to the grid
    x = vit.patch_drop(x)
    return vit.norm_pre(x)


def cls_attention_row(q_cls: torch.Tensor, k: torch.Tensor, scale: float, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Head-averaged CLS→patch attention from the CLS query and the keys.

    ``q_cls`` [B, H, d], ``k`` [B, H, T, d] (T = prefix + patches) -> [B, T - prefix] float32:
    ``mean_h softmax(q_cls,h · K_hᵀ · scale)[prefix:]``. Costs O(B·H·T·d); computed in float32.
    """
    logits = torch.einsum("bhd,bhtd->bht", q_cls.float(), k.float()) * scale
    return logits.softmax(dim=-1)[:, :, num_prefix_tokens:].mean(dim=1)


def _qkv(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, t, _ = x.shape
    qkv = attn.qkv(x).reshape(b, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def attention_with_cls_row(attn: nn.Module, x: torch.Tensor, num_prefix_tokens: int = 1,
                           fused: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """timm ``Attention`` forward that also returns the CLS row (see :func:`cls_attention_row`).

    ``x`` [B, T, C] -> (output [B, T, C], CLS→patch attention [B, T - prefix]). The attention output
    goes through SDPA when ``fused`` (default: the module's own setting), else the explicit path.
    """
    b, t, _ = x.shape
    q, k, v = _qkv(attn, x)
    cls_row = cls_attention_row(q[:, :, 0], k, attn.scale, num_prefix_tokens)
    use_fused = attn.fused_attn if fused is None else fused
    if use_fused:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    else:
        weights = (q * attn.scale) @ k.transpose(-2, -1)
        out = attn.attn_drop(weights.softmax(dim=-1)) @ v
    out = out.transpose(1, 2).reshape(b, t, attn.attn_dim)
    out = attn.norm(out)
    gate = getattr(attn, "gate", None)
    if gate is not None:
        out = out * gate(x).sigmoid()
    return attn.proj_drop(attn.proj(out)), cls_row


def full_attention_cls_row(attn: nn.Module, x: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """The reference's way: materialise softmax(QKᵀ/√d) [B, H, T, T] and take row 0 (tests, benchmarks)."""
    q, k, _ = _qkv(attn, x)
    weights = ((q.float() * attn.scale) @ k.float().transpose(-2, -1)).softmax(dim=-1)
    return weights[:, :, 0, num_prefix_tokens:].mean(dim=1)


def block_with_cls_row(block: Block, x: torch.Tensor, num_prefix_tokens: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """timm pre-norm ``Block`` forward returning (tokens [B, T, C], CLS→patch attention [B, T - prefix])."""
    y, cls_row = attention_with_cls_row(block.attn, block.norm1(x), num_prefix_tokens)
    x = x + block.drop_path1(block.ls1(y))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, cls_row


class BackboneOutput(NamedTuple):
    tokens: torch.Tensor  # [B, prefix + n, D] after the final norm
    cls_attention: torch.Tensor | None  # [B, n] float32, last block, head-averaged


def backbone_forward(vit: VisionTransformer, images: torch.Tensor, masks: torch.Tensor | None = None,
                     cls_attention: bool = False) -> BackboneOutput:
    """All tokens after the final norm (the reference's ``return_all_tokens=True``), optionally with
    the last block's CLS→patch attention computed beside the attention kernel.

    ``images`` [B, 3, H, W]; ``masks`` [B, H/p, W/p] bool or None.
    """
    x = embed_tokens(vit, images, masks)
    prefix = vit.num_prefix_tokens
    row = None
    blocks = list(vit.blocks)
    last = len(blocks) - 1
    for i, blk in enumerate(blocks):
        if cls_attention and i == last:
            x, row = block_with_cls_row(blk, x, prefix)
        else:
            x = blk(x)
    return BackboneOutput(vit.norm(x), row)
