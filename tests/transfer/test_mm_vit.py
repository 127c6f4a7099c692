"""The mm backbone (``AttMaskViT``) is the foundation's ViT with the checkpoint's weights, and the
layer-wise lr-decay constructor gives BEiT's groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from attmask.eval.arch import resample_pos_embed
from attmask.eval.checkpoint import load_backbone
from attmask.eval.errors import BadInput
from attmask.eval.features import intermediate_layers
from attmask.transfer.mm_layer_decay import layer_decay_groups, layer_id, lr_scale
from attmask.transfer.mm_vit import AttMaskViT, default_out_indices

from .dense_fixtures import tiny_checkpoint

# tiny forwards on a shared 2-core machine: one OpenMP thread keeps them fast (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_ibot.pth")


def registries() -> list:
    import mmdet.registry
    import mmseg.registry

    import attmask.transfer.mm_vit  # noqa: F401  (registers AttMaskViT)

    return [mmdet.registry.MODELS, mmseg.registry.MODELS]


def test_default_out_indices() -> None:
    assert default_out_indices(12) == (3, 5, 7, 11)
    assert default_out_indices(24) == (7, 11, 15, 23)
    assert default_out_indices(4) == (0, 1, 2, 3)
    with pytest.raises(BadInput):
        default_out_indices(2)


@pytest.mark.parametrize("which", [0, 1], ids=["mmdet", "mmseg"])
def test_block_outputs_equal_foundation_features(ckpt: Path, which: int) -> None:
    registry = registries()[which]
    bb = registry.build(dict(type="AttMaskViT", ckpt=str(ckpt), img_size=64, out_with_norm=True, with_pyramid=False))
    bb.init_weights()  # what mmengine's Runner calls: it must leave the loaded ViT alone
    bb.eval()
    ref = load_backbone(str(ckpt), img_size=64).model.eval()
    x = torch.randn(2, 3, 64, 96)  # not the training size: the position embedding is resampled at run time
    with torch.no_grad():
        ours = bb.block_tokens(x)
        theirs = intermediate_layers(ref, x, n=4)
        maps = bb(x)
    assert bb.out_indices == (0, 1, 2, 3) and len(ours) == 4
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for m, t in zip(maps, theirs):  # [B, D, H/16, W/16] = patch tokens reshaped
        assert m.shape == (2, 64, 4, 6)
        torch.testing.assert_close(m.flatten(2).transpose(1, 2), t[:, 1:], rtol=0, atol=0)


def test_weights_come_from_the_checkpoint(ckpt: Path) -> None:
    raw = torch.load(ckpt, weights_only=True)
    bb = AttMaskViT(ckpt=str(ckpt), img_size=64)
    qkv = bb.vit.blocks[2].attn.qkv.weight
    assert torch.equal(qkv, raw["teacher"]["backbone.blocks.2.attn.qkv.weight"])
    assert not torch.equal(qkv, raw["student"]["module.backbone.blocks.2.attn.qkv.weight"])
    student = AttMaskViT(ckpt=str(ckpt), checkpoint_key="student", img_size=64)
    assert torch.equal(student.vit.blocks[2].attn.qkv.weight, raw["student"]["module.backbone.blocks.2.attn.qkv.weight"])
    assert bb.checkpoint_info.key == "teacher" and bb.checkpoint_info.format == "pretrain"


def test_pos_embed_interpolated_to_the_training_size(ckpt: Path) -> None:
    raw = torch.load(ckpt, weights_only=True)["teacher"]["backbone.pos_embed"]  # 1 + 4x4 positions (64 px)
    square = AttMaskViT(ckpt=str(ckpt), img_size=128)
    assert square.vit.pos_embed.shape == (1, 1 + 8 * 8, 64)
    torch.testing.assert_close(square.vit.pos_embed.data, resample_pos_embed(raw, (8, 8), 1))
    wide = AttMaskViT(ckpt=str(ckpt), img_size=(64, 128))  # non-square (iBOT's COCO crop is 800 x 1008)
    assert wide.vit.pos_embed.shape == (1, 1 + 4 * 8, 64)
    torch.testing.assert_close(wide.vit.pos_embed.data, resample_pos_embed(raw, (4, 8), 1))
    assert tuple(wide.vit.patch_embed.grid_size) == (4, 8)
    assert wide(torch.randn(1, 3, 64, 128))[2].shape == (1, 64, 4, 8)


def test_pyramid_strides_drop_path_and_norm(ckpt: Path) -> None:
    bb = AttMaskViT(ckpt=str(ckpt), img_size=64, drop_path_rate=0.3)
    outs = bb(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2]  # strides 4, 8, 16, 32 for patch 16
    assert isinstance(bb.vit.norm, nn.Identity)  # out_with_norm=False (iBOT's COCO setting)
    assert isinstance(bb.vit.blocks[0].drop_path1, nn.Identity)
    assert bb.vit.blocks[-1].drop_path1.drop_prob == pytest.approx(0.3)
    assert bb.vit.blocks[1].drop_path2.drop_prob == pytest.approx(0.1)


@pytest.mark.parametrize("patch", [8, 4])
def test_pyramid_strides_for_small_patches(patch: int, tmp_path: Path) -> None:
    small = tiny_checkpoint(tmp_path / f"p{patch}.pth", arch=f"vit_d64_l4_h2_patch{patch}_64")
    outs = AttMaskViT(ckpt=str(small), img_size=64)(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 16), (8, 8), (4, 4), (2, 2)]  # strides 4, 8, 16, 32


def test_frozen_backbone(ckpt: Path) -> None:
    bb = AttMaskViT(ckpt=str(ckpt), img_size=64, frozen=True, with_pyramid=False, out_with_norm=True)
    bb.train()
    assert not bb.vit.training and not any(p.requires_grad for p in bb.parameters())


def test_bad_checkpoint_is_a_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        AttMaskViT(ckpt=str(tmp_path / "missing.pth"))
    with pytest.raises(BadInput, match="ckpt"):
        AttMaskViT(ckpt=None)


class _Detector(nn.Module):
    def __init__(self, backbone: AttMaskViT) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(64, 3)


def test_layer_decay_groups(ckpt: Path) -> None:
    depth, rate, lr, wd = 4, 0.75, 1e-4, 0.05
    assert layer_id("backbone.vit.cls_token", depth) == 0
    assert layer_id("backbone.vit.patch_embed.proj.weight", depth) == 0
    assert layer_id("backbone.vit.blocks.2.mlp.fc1.weight", depth) == 3
    assert layer_id("backbone.vit.norm.weight", depth) == 5 and layer_id("neck.conv.weight", depth) == 5
    assert lr_scale(0, depth, rate) == pytest.approx(rate ** 5) and lr_scale(5, depth, rate) == 1.0
    model = _Detector(AttMaskViT(ckpt=str(ckpt), img_size=64, out_with_norm=True))
    groups = layer_decay_groups(model, lr, wd, rate)
    by_param = {n: g for g in groups for n in g["param_names"]}
    assert set(by_param) == {n for n, _ in model.named_parameters()}
    assert by_param["backbone.vit.pos_embed"]["lr"] == pytest.approx(lr * rate ** 5)
    assert by_param["backbone.vit.pos_embed"]["weight_decay"] == wd  # as the reference runs it (see module doc)
    assert by_param["backbone.vit.blocks.0.attn.qkv.weight"]["lr"] == pytest.approx(lr * rate ** 4)
    assert by_param["backbone.vit.blocks.3.attn.qkv.weight"]["lr"] == pytest.approx(lr * rate)
    assert by_param["backbone.vit.blocks.3.attn.qkv.bias"]["weight_decay"] == 0.0
    assert by_param["backbone.vit.blocks.3.norm1.weight"]["weight_decay"] == 0.0
    assert by_param["head.weight"]["lr"] == pytest.approx(lr) and by_param["head.weight"]["weight_decay"] == wd
    assert by_param["backbone.pyramid.fpn1.0.weight"]["lr"] == pytest.approx(lr)


def test_layer_decay_constructor_through_mmengine(ckpt: Path) -> None:
    from mmengine.optim import build_optim_wrapper

    import attmask.transfer.mm_layer_decay  # noqa: F401  (registers the constructor)

    model = _Detector(AttMaskViT(ckpt=str(ckpt), img_size=64))
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type="AdamW", lr=1e-4, weight_decay=0.05),
        constructor="AttMaskLayerDecayOptimWrapperConstructor", paramwise_cfg=dict(layer_decay_rate=0.8)))
    lrs = sorted({round(g["lr"] / 1e-4, 6) for g in wrapper.optimizer.param_groups})
    assert lrs == sorted({round(0.8 ** k, 6) for k in range(6)})
    n_params = sum(len(g["params"]) for g in wrapper.optimizer.param_groups)
    assert n_params == sum(1 for p in model.parameters() if p.requires_grad)
