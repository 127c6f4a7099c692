"""iBOT head: reference key names, weight normalisation, shared / separate patch layers, norm_last_layer."""

from __future__ import annotations

import torch
from torch import nn

from attmask.pretrain.heads import WeightNormLinear, iBOTHead


def test_weight_norm_matches_torch_weight_norm() -> None:
    torch.manual_seed(0)
    ours = WeightNormLinear(8, 5, norm_last_layer=False)
    with torch.no_grad():
        ours.weight_g.uniform_(0.5, 2.0)
    ref = nn.utils.parametrizations.weight_norm(nn.Linear(8, 5, bias=False), dim=0)
    with torch.no_grad():
        ref.parametrizations.weight.original0.copy_(ours.weight_g)
        ref.parametrizations.weight.original1.copy_(ours.weight_v)
    x = torch.randn(3, 8)
    torch.testing.assert_close(ours(x), ref(x))
    # rows have norm g
    torch.testing.assert_close(ours.weight.norm(dim=1), ours.weight_g[:, 0])


def test_keys_and_shapes_follow_the_reference() -> None:
    head = iBOTHead(64, 100, 100, hidden_dim=32, bottleneck_dim=16, shared_head=True)
    keys = set(head.state_dict())
    assert keys == {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
                    "last_layer.weight_g", "last_layer.weight_v", "last_layer2.weight_g", "last_layer2.weight_v"}
    assert head.last_layer2 is head.last_layer
    assert head.state_dict()["last_layer.weight_g"].shape == (100, 1)
    assert torch.all(head.last_layer.weight_g == 1)
    separate = iBOTHead(64, 100, 50, hidden_dim=32, bottleneck_dim=16, shared_head=False)
    assert separate.last_layer2 is not separate.last_layer
    assert separate.forward_patch(torch.randn(7, 64)).shape == (7, 50)
    dino = iBOTHead(64, 100, None, hidden_dim=32, bottleneck_dim=16)
    assert dino.last_layer2 is None and not any(k.startswith("last_layer2") for k in dino.state_dict())
    one = iBOTHead(64, 10, None, nlayers=1, bottleneck_dim=16)
    assert {"mlp.weight", "mlp.bias"} <= set(one.state_dict())


def test_norm_last_layer_freezes_g_and_init() -> None:
    frozen = iBOTHead(16, 10, 10, hidden_dim=8, bottleneck_dim=4, norm_last_layer=True)
    free = iBOTHead(16, 10, 10, hidden_dim=8, bottleneck_dim=4, norm_last_layer=False)
    assert not frozen.last_layer.weight_g.requires_grad and free.last_layer.weight_g.requires_grad
    for m in frozen.mlp:
        if isinstance(m, nn.Linear):
            assert torch.all(m.bias == 0) and m.weight.std() < 0.05  # trunc-normal(0.02)


def test_bottleneck_is_l2_normalised() -> None:
    head = iBOTHead(16, 10, 10, hidden_dim=8, bottleneck_dim=4)
    z = head.bottleneck(torch.randn(5, 16))
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(5))
