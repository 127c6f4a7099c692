"""The pre-training ViT: CLS-row attention beside the kernel, mask token, local-crop position embeddings."""

from __future__ import annotations

import pytest
import torch

from attmask.eval.arch import ArchSpec, build_vit
from attmask.pretrain.vit import (
    apply_mask_token,
    attention_with_cls_row,
    backbone_forward,
    build_backbone,
    cls_attention_row,
    embed_tokens,
    full_attention_cls_row,
)

SPEC = ArchSpec(embed_dim=48, depth=2, num_heads=3, patch_size=4, img_size=32)


def explicit_row(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(QKᵀ/√d) materialised in float64, row 0, patch columns, head mean."""
    d = q.shape[-1]
    attn = torch.softmax(q.double() @ k.double().transpose(-2, -1) / d**0.5, dim=-1)
    return attn[:, :, 0, 1:].mean(1)


@pytest.mark.parametrize("tokens", [1 + 64, 1 + 16, 1 + 6 * 10])
def test_cls_row_equals_explicit_softmax_row(tokens: int) -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, tokens, 16, generator=g)
    k = torch.randn(3, 4, tokens, 16, generator=g)
    row = cls_attention_row(q[:, :, 0], k, 16**-0.5)
    assert row.shape == (3, tokens - 1)
    torch.testing.assert_close(row.double(), explicit_row(q, k), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("impl", ["fused", "explicit"])
@pytest.mark.parametrize("size", [32, 16, 24])
def test_last_block_row_matches_materialised_attention(impl: str, size: int) -> None:
    torch.manual_seed(0)
    vit = build_backbone(SPEC, attn_impl=impl).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = backbone_forward(vit, x, cls_attention=True)
        h = embed_tokens(vit, x)
        h = vit.blocks[0](h)
        expected = full_attention_cls_row(vit.blocks[1].attn, vit.blocks[1].norm1(h))
        plain = vit.forward_features(x)
    n = (size // 4) ** 2
    assert out.cls_attention.shape == (2, n)
    torch.testing.assert_close(out.cls_attention, expected, rtol=1e-5, atol=1e-6)
    # the attention output beside the row is timm's own forward
    torch.testing.assert_close(out.tokens, plain, rtol=1e-5, atol=1e-5)
    # rows are a softmax over CLS + patches with the CLS column dropped: sums in (0, 1)
    assert torch.all(out.cls_attention.sum(1) < 1) and torch.all(out.cls_attention > 0)


def test_attention_output_identical_fused_and_explicit() -> None:
    torch.manual_seed(0)
    vit = build_backbone(SPEC).eval()
    x = torch.randn(2, 17, 48)
    attn = vit.blocks[0].attn
    with torch.no_grad():
        a, ra = attention_with_cls_row(attn, x, fused=True)
        b, rb = attention_with_cls_row(attn, x, fused=False)
        ref = attn(x)
    torch.testing.assert_close(a, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ra, rb)


def test_mask_token_replaces_patch_embedding_before_position() -> None:
    torch.manual_seed(0)
    vit = build_backbone(SPEC, mask_token=True).eval()
    assert torch.count_nonzero(vit.masked_embed) == 0  # zero-initialised
    with torch.no_grad():
        vit.masked_embed.normal_()
    x = torch.randn(2, 3, 32, 32)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 1, 2] = masks[1, 7, 7] = True
    with torch.no_grad():
        tokens = embed_tokens(vit, x, masks)
        plain = embed_tokens(vit, x)
    pos = vit.pos_embed[0, 1:]  # the model's native 8x8 grid
    flat = masks.reshape(2, -1)
    # masked: mask token + position; unmasked: unchanged
    torch.testing.assert_close(tokens[0, 1 + 1 * 8 + 2], vit.masked_embed[0] + pos[1 * 8 + 2])
    torch.testing.assert_close(tokens[1, 1 + 63], vit.masked_embed[0] + pos[63])
    torch.testing.assert_close(tokens[:, 1:][~flat], plain[:, 1:][~flat])
    torch.testing.assert_close(tokens[:, 0], plain[:, 0])


def test_apply_mask_token_keeps_gradient_path_when_nothing_masked() -> None:
    emb = torch.zeros(1, 4, requires_grad=True)
    out = apply_mask_token(torch.randn(2, 2, 2, 4), torch.zeros(2, 4, dtype=torch.bool), emb)
    out.sum().backward()
    assert emb.grad is not None and torch.count_nonzero(emb.grad) == 0


def test_local_crops_use_interpolated_position_embeddings() -> None:
    torch.manual_seed(0)
    vit = build_backbone(SPEC).eval()
    with torch.no_grad():
        out = backbone_forward(vit, torch.randn(3, 3, 16, 16))
    assert out.tokens.shape == (3, 1 + 16, 48)
    assert out.cls_attention is None


def test_backbone_keys_are_the_harness_vit_keys() -> None:
    student = build_backbone(SPEC, mask_token=True)
    teacher = build_backbone(SPEC)
    harness = set(build_vit(SPEC).state_dict())
    assert set(teacher.state_dict()) == harness
    assert set(student.state_dict()) == harness | {"masked_embed"}
    assert student.masked_embed.shape == (1, 48)
