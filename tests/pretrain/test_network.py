"""Student / teacher network: the patch modes agree with projecting every token, in outputs and gradients."""

from __future__ import annotations

import numpy as np
import torch

from attmask.eval.arch import ArchSpec
from attmask.pretrain.heads import iBOTHead, masked_rows
from attmask.pretrain.losses import iBOTLoss
from attmask.pretrain.network import PretrainNet
from attmask.pretrain.vit import build_backbone

from .test_losses import reference_ibot

SPEC = ArchSpec(embed_dim=32, depth=2, num_heads=2, patch_size=8, img_size=32)


def make(shared: bool) -> PretrainNet:
    torch.manual_seed(0)
    return PretrainNet(build_backbone(SPEC, mask_token=True),
                       iBOTHead(32, 20, 20 if shared else 12, hidden_dim=16, bottleneck_dim=8, shared_head=shared)).eval()


def test_patch_modes_agree() -> None:
    for shared in (True, False):
        net = make(shared)
        g = torch.randn(4, 3, 32, 32)
        loc = torch.randn(6, 3, 16, 16)
        masks = torch.rand(4, 4, 4) < 0.4
        with torch.no_grad():
            full = net(g, loc, masks, patch="all")
            picked = net(g, loc, masks, patch="masked")
            z = net(g, loc, masks, patch="bottleneck")
            cls_only = net(g, loc, masks, patch="none")
        assert full.cls.shape == (10, 20) and full.patch.shape == (4, 16, 20 if shared else 12)
        m = int(masks.sum())
        assert picked.patch.shape[0] % 128 == 0 and picked.patch.shape[0] >= m  # padded to a bucket
        torch.testing.assert_close(picked.patch[:m], full.patch[masks.reshape(4, -1)])
        torch.testing.assert_close(picked.cls, full.cls)
        torch.testing.assert_close(cls_only.cls, full.cls)
        last = net.head.last_layer2
        torch.testing.assert_close(last(z.patch), full.patch, rtol=1e-5, atol=1e-5)
        # the teacher's patch center from the mean bottleneck: mean(W z) = W mean(z)
        torch.testing.assert_close(last(z.patch.mean(1)), full.patch.mean(1), rtol=1e-5, atol=1e-5)


def test_masks_change_only_the_masked_crops() -> None:
    net = make(True)
    g = torch.randn(2, 3, 32, 32)
    none = torch.zeros(2, 4, 4, dtype=torch.bool)
    some = none.clone()
    some[0, 0, 0] = True
    with torch.no_grad():
        a = net(g, None, none, patch="all", cls_attention=True)
        b = net(g, None, some, patch="all")
    torch.testing.assert_close(a.cls[1], b.cls[1])  # crop 1 unmasked: unchanged
    assert not torch.allclose(a.cls[0], b.cls[0])  # crop 0 lost a token's content
    assert a.cls_attention.shape == (2, 16) and a.num_patches == 16 and b.cls_attention is None


def test_student_gradients_equal_the_reference_formulation() -> None:
    """Projecting only the masked tokens (our student) gives the gradients of the reference's way:
    the head on every token, the iBOT loss over full patch tensors weighted by the masks."""
    B, G, L, K = 3, 2, 2, 20
    g = torch.randn(G * B, 3, 32, 32)
    loc = torch.randn(L * B, 3, 16, 16)
    masks = torch.rand(G * B, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.4
    t_cls, t_patch = torch.randn(G * B, K), torch.randn(G * B, 16, K)
    grads = []
    for ours in (True, False):
        net = make(True).train()
        torch.manual_seed(5)  # the same drop-path draws in both passes
        if ours:
            out = net(g, loc, masks, patch="masked")
            loss_fn = iBOTLoss(K, K, G, teacher_temps=np.array([0.05]), teacher_patch_temps=np.array([0.06]))
            loss = loss_fn(out.cls, out.patch, t_cls, masked_rows(t_patch, masks), t_patch.mean(1), masks,
                           epoch=0)["loss"]
        else:
            out = net(g, loc, masks, patch="all")
            l1, l2 = reference_ibot(out.cls, out.patch, t_cls, t_patch, masks, torch.zeros(1, K),
                                    torch.zeros(1, 1, K), G, 0.05, 0.06)
            loss = l1 + l2
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-4, atol=1e-6, msg=name)
