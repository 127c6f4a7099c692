"""Parameter groups, per-parameter clipping, last-layer freezing and the teacher EMA (DINO / iBOT utils)."""

from __future__ import annotations

import torch
from torch import nn

from attmask.eval.arch import ArchSpec
from attmask.pretrain.heads import iBOTHead
from attmask.pretrain.network import PretrainNet
from attmask.pretrain.optim import (
    cancel_last_layer_gradients,
    clip_gradients,
    ema_pairs,
    ema_update,
    param_groups,
    set_schedule_values,
)
from attmask.pretrain.vit import build_backbone

SPEC = ArchSpec(embed_dim=32, depth=1, num_heads=2, patch_size=8, img_size=16)


def net(mask_token: bool = True, norm_last_layer: bool = False) -> PretrainNet:
    return PretrainNet(build_backbone(SPEC, mask_token=mask_token),
                       iBOTHead(32, 20, 20, hidden_dim=16, bottleneck_dim=8, norm_last_layer=norm_last_layer))


def test_param_groups_no_decay_on_biases_and_1d() -> None:
    model = net(norm_last_layer=True)
    decay, no_decay = param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    assert all(names[id(p)].endswith(".bias") or p.ndim == 1 for p in no_decay["params"])
    assert all(p.ndim > 1 and not names[id(p)].endswith(".bias") for p in decay["params"])
    # frozen weight_g (norm_last_layer) is left out; cls_token / pos_embed / masked_embed are decayed
    decayed = {names[id(p)] for p in decay["params"]}
    assert "head.last_layer.weight_g" not in decayed | {names[id(p)] for p in no_decay["params"]}
    assert {"backbone.cls_token", "backbone.pos_embed", "backbone.masked_embed"} <= decayed
    opt = torch.optim.AdamW([decay, no_decay])
    set_schedule_values(opt, 0.1, 0.3)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]


def test_clip_gradients_per_parameter() -> None:
    a, b = nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])  # norm 5 -> clipped to 1
    b.grad = torch.tensor([0.3, 0.4])  # norm 0.5 -> untouched (bitwise)
    model = nn.ParameterList([a, b])
    norms = clip_gradients(model, 1.0)
    assert [round(float(n), 5) for n in norms] == [5.0, 0.5]
    torch.testing.assert_close(a.grad, torch.tensor([3.0, 4.0, 0, 0]) / (5 + 1e-6))
    assert torch.equal(b.grad, torch.tensor([0.3, 0.4]))


def test_last_layer_gradients_dropped_in_first_epochs() -> None:
    model = net()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    cancel_last_layer_gradients(model, epoch=0, freeze_last_layer=1)
    for n, p in model.named_parameters():
        assert (p.grad is None) == ("last_layer" in n)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    cancel_last_layer_gradients(model, epoch=1, freeze_last_layer=1)
    assert all(p.grad is not None for p in model.parameters())


def test_ema_skips_mask_token_and_updates_teacher() -> None:
    student, teacher = net(mask_token=True), net(mask_token=False)
    s, t = ema_pairs(student, teacher)
    assert len(s) == len(t) == len(list(teacher.parameters()))
    before = [x.clone() for x in t]
    ema_update(s, t, 0.9)
    for b, x, y in zip(before, t, s):
        torch.testing.assert_close(x, 0.9 * b + 0.1 * y)
