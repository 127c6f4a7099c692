"""iBOT and DINO losses on tiny hand-built tensors with exact expected values, and against the
reference formulation (``iBOTLoss.forward`` of bytedance/ibot, written out naively here)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from attmask.pretrain.losses import (
    DINOLoss,
    cls_loss,
    iBOTLoss,
    masked_mean_entropy,
    masked_patch_loss,
    teacher_softmax,
    teacher_temperature_schedule,
)

TAU_S, TAU_T = 0.1, 0.04


def logits_for(probs: list[float], temp: float, offset: float = 0.0) -> torch.Tensor:
    """Logits whose softmax at ``temp`` is ``probs`` (plus a constant ``offset``)."""
    return torch.tensor([temp * math.log(p) + offset for p in probs])


def ce(t: list[float], s: list[float]) -> float:
    return -sum(a * math.log(b) for a, b in zip(t, s))


def test_cls_loss_exact_values() -> None:
    # 2 global views + 1 local view, batch 1, K = 2
    teacher = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    student = torch.stack([logits_for([0.5, 0.5], TAU_S), logits_for([0.75, 0.25], TAU_S),
                           logits_for([0.25, 0.75], TAU_S)])
    expected = (ce([0.75, 0.25], [0.75, 0.25]) + ce([0.75, 0.25], [0.25, 0.75])
                + ce([0.5, 0.5], [0.5, 0.5]) + ce([0.5, 0.5], [0.25, 0.75])) / 4
    got = cls_loss(student, teacher, num_global=2, student_temp=TAU_S)
    assert math.isclose(got.item(), expected, rel_tol=1e-6)


def test_patch_loss_exact_values() -> None:
    # 2 global crops (batch 1), 3 tokens; crop 0 masks tokens 0 and 2, crop 1 nothing
    masks = torch.tensor([[True, False, True], [False, False, False]])
    teacher = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    student = torch.stack([logits_for([0.6, 0.4], TAU_S), logits_for([0.2, 0.8], TAU_S)])
    expected = ((ce([0.9, 0.1], [0.6, 0.4]) + ce([0.5, 0.5], [0.2, 0.8])) / 2 + 0.0) / 2
    got = masked_patch_loss(student, teacher, masks, TAU_S)
    assert math.isclose(got.item(), expected, rel_tol=1e-6)
    # padding rows past the masked ones are ignored
    pad_s = torch.cat([student, torch.randn(5, 2)])
    pad_t = torch.cat([teacher, torch.rand(5, 2)])
    assert masked_patch_loss(pad_s, pad_t, masks, TAU_S).item() == got.item()
    # nothing masked anywhere: the loss is exactly 0 (sum over no tokens / max(1, 0))
    assert masked_patch_loss(student[:0], teacher[:0], torch.zeros(2, 3, dtype=torch.bool), TAU_S).item() == 0.0


def test_ibot_loss_module_exact_values_and_centers() -> None:
    center = torch.tensor([[1.0, -2.0]])
    loss = iBOTLoss(2, 2, 2, teacher_temps=np.array([TAU_T]), teacher_patch_temps=np.array([TAU_T]),
                    student_temp=TAU_S, lambda1=1.0, lambda2=0.5)
    loss.center.copy_(center)
    loss.center2.copy_(center[None])
    t_cls = torch.stack([logits_for([0.75, 0.25], TAU_T) + center[0], center[0].clone()])
    s_cls = torch.stack([logits_for([0.5, 0.5], TAU_S), logits_for([0.75, 0.25], TAU_S)])
    masks = torch.tensor([[[True, False]], [[False, True]]])  # [G·B=2, h=1, w=2]
    t_patch = torch.stack([logits_for([0.9, 0.1], TAU_T) + center[0], logits_for([0.5, 0.5], TAU_T) + center[0]])
    s_patch = torch.stack([logits_for([0.6, 0.4], TAU_S), logits_for([0.2, 0.8], TAU_S)])
    t_patch_mean = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    out = loss(s_cls, s_patch, t_cls, t_patch, t_patch_mean, masks, epoch=0)
    exp_cls = (ce([0.75, 0.25], [0.75, 0.25]) + ce([0.5, 0.5], [0.5, 0.5])) / 2
    exp_patch = (ce([0.9, 0.1], [0.6, 0.4]) + ce([0.5, 0.5], [0.2, 0.8])) / 2 * 0.5
    assert math.isclose(out["cls"].item(), exp_cls, rel_tol=1e-6)
    assert math.isclose(out["patch"].item(), exp_patch, rel_tol=1e-6)
    assert math.isclose(out["loss"].item(), exp_cls + exp_patch, rel_tol=1e-6)
    # centers: c <- 0.9 c + 0.1 mean(teacher outputs)
    torch.testing.assert_close(loss.center, 0.9 * center + 0.1 * t_cls.mean(0, keepdim=True))
    torch.testing.assert_close(loss.center2, (0.9 * center + 0.1 * torch.tensor([[1.0, 2.0]]))[None])
    # teacher collapse monitors: entropies of [3/4, 1/4] and [1/2, 1/2]
    h = (ce([0.75, 0.25], [0.75, 0.25]) + math.log(2)) / 2
    assert math.isclose(out["teacher_entropy"].item(), h, rel_tol=1e-5)
    assert math.isclose(out["teacher_max_prob"].item(), 0.625, rel_tol=1e-6)
    # spread: std over K of the logits centred with the center before its update; crop 0's centred
    # logits are TAU_T * (ln 3/4, ln 1/4) (std TAU_T ln 3 / sqrt 2), crop 1's are 0
    assert math.isclose(out["teacher_spread"].item(), TAU_T * math.log(3) / math.sqrt(2) / 2, rel_tol=1e-5)
    # patch targets of the two masked tokens: [0.9, 0.1] and [1/2, 1/2]
    assert math.isclose(out["teacher_patch_entropy"].item(), (ce([0.9, 0.1], [0.9, 0.1]) + math.log(2)) / 2,
                        rel_tol=1e-5)


def test_patch_target_entropy_ignores_padding_rows_and_empty_masks() -> None:
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])  # rows 2, 3: padding
    masks = torch.tensor([[True, False], [False, True]])
    assert math.isclose(masked_mean_entropy(probs, masks).item(), math.log(2) / 2, rel_tol=1e-6)
    assert masked_mean_entropy(probs, torch.zeros(2, 2, dtype=torch.bool)).item() == 0.0


def reference_ibot(student_cls, student_patch_all, teacher_cls, teacher_patch_all, masks, center, center2,
                   ngcrops, temp, temp2):
    """The reference loop (iBOT ``iBOTLoss.forward``) on full patch tensors."""
    student_cls = (student_cls / TAU_S).chunk(student_cls.shape[0] // (teacher_cls.shape[0] // ngcrops))
    student_patch = (student_patch_all / TAU_S).chunk(ngcrops)
    t_cls = F.softmax((teacher_cls - center) / temp, dim=-1).chunk(ngcrops)
    t_patch = F.softmax((teacher_patch_all - center2) / temp2, dim=-1).chunk(ngcrops)
    m = masks.chunk(ngcrops)
    l1 = l2 = 0.0
    n1 = n2 = 0
    for q in range(len(t_cls)):
        for v in range(len(student_cls)):
            if v == q:
                loss2 = torch.sum(-t_patch[q] * F.log_softmax(student_patch[v], dim=-1), dim=-1)
                mask = m[v].flatten(-2, -1)
                loss2 = torch.sum(loss2 * mask.float(), dim=-1) / mask.sum(dim=-1).clamp(min=1.0)
                l2 += loss2.mean()
                n2 += 1
            else:
                l1 += torch.sum(-t_cls[q] * F.log_softmax(student_cls[v], dim=-1), dim=-1).mean()
                n1 += 1
    return l1 / n1, l2 / n2


def test_packed_ibot_loss_equals_reference_formulation() -> None:
    g = torch.Generator().manual_seed(0)
    B, G, L, n, K = 5, 2, 3, 16, 32
    s_cls = torch.randn((G + L) * B, K, generator=g)
    t_cls = torch.randn(G * B, K, generator=g)
    s_patch = torch.randn(G * B, n, K, generator=g)
    t_patch = torch.randn(G * B, n, K, generator=g)
    masks = torch.rand(G * B, 4, 4, generator=g) < 0.3
    masks[3] = False  # an unmasked crop counts as 0
    center, center2 = torch.randn(1, K, generator=g), torch.randn(1, 1, K, generator=g)
    ref_cls, ref_patch = reference_ibot(s_cls, s_patch, t_cls, t_patch, masks, center, center2, G, 0.05, 0.06)
    loss = iBOTLoss(K, K, G, teacher_temps=np.array([0.05]), teacher_patch_temps=np.array([0.06]))
    loss.center.copy_(center)
    loss.center2.copy_(center2)
    flat = masks.reshape(G * B, -1)
    out = loss(s_cls, s_patch[flat], t_cls, t_patch[flat], t_patch.mean(1), masks, epoch=0)
    torch.testing.assert_close(out["cls"], ref_cls, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out["patch"], ref_patch, rtol=1e-6, atol=1e-6)
    # centers as the reference's update_center (one process)
    torch.testing.assert_close(loss.center, center * 0.9 + t_cls.sum(0, keepdim=True) / (G * B) * 0.1)
    torch.testing.assert_close(loss.center2, center2 * 0.9 + t_patch.mean(1).sum(0, keepdim=True) / (G * B) * 0.1)


def test_dino_loss_exact_and_center() -> None:
    center = torch.zeros(1, 2)
    loss = DINOLoss(2, 2, teacher_temps=np.array([TAU_T]), student_temp=TAU_S)
    t = torch.stack([logits_for([0.75, 0.25], TAU_T), logits_for([0.5, 0.5], TAU_T)])
    s = torch.stack([logits_for([0.5, 0.5], TAU_S), logits_for([0.75, 0.25], TAU_S),
                     logits_for([0.25, 0.75], TAU_S)])
    out = loss(s, t, epoch=0)
    expected = (ce([0.75, 0.25], [0.75, 0.25]) + ce([0.75, 0.25], [0.25, 0.75])
                + ce([0.5, 0.5], [0.5, 0.5]) + ce([0.5, 0.5], [0.25, 0.75])) / 4
    assert math.isclose(out["loss"].item(), expected, rel_tol=1e-6)
    assert out["patch"].item() == 0.0
    assert math.isclose(out["teacher_spread"].item(), TAU_T * math.log(3) / math.sqrt(2) / 2, rel_tol=1e-5)
    assert "teacher_patch_entropy" not in out
    torch.testing.assert_close(loss.center, center * 0.9 + 0.1 * t.mean(0, keepdim=True))
    assert set(loss.state_dict()) == {"center"}


def test_teacher_softmax_centres_and_sharpens() -> None:
    p = teacher_softmax(torch.tensor([[5.0 + 0.04 * math.log(3), 5.0]]), torch.tensor([[5.0, 5.0]]), 0.04)
    torch.testing.assert_close(p, torch.tensor([[0.75, 0.25]]))


def test_teacher_temperature_schedule() -> None:
    s = teacher_temperature_schedule(0.04, 0.07, 30, 100)
    assert len(s) == 100 and s[0] == 0.04 and math.isclose(s[29], 0.07) and s[99] == 0.07
    assert math.isclose(s[1], 0.04 + 0.03 / 29)  # np.linspace over 30 epochs, both ends included
    short = teacher_temperature_schedule(0.04, 0.07, 30, 5)
    assert len(short) == 5 and short[-1] < 0.07
    delayed = teacher_temperature_schedule(0.04, 0.07, 3, 10, start_epoch=2)
    assert list(delayed[:3]) == [0.04, 0.04, 0.04] and delayed[4] == 0.07
