"""The iBOT objective (CLS + masked-patch self-distillation) and the DINO objective (CLS only).

Sources: iBOT (Zhou et al., ICLR 2022) ``iBOTLoss`` in ``main_ibot.py`` (also ``main_attmask.py`` of
AttMask); DINO (Caron et al., ICCV 2021) ``DINOLoss``. ../shared/reference/PROTOCOLS.md §2.

Pure functions compute the terms from logits; two small modules hold the centers (buffers ``center``
[1, K] and, for iBOT, ``center2`` [1, 1, K'], the reference names, saved as ``ibot_loss`` /
``dino_loss`` in checkpoints) and update them with momentum from the teacher outputs, summed across
processes (``all_reduce``) so every rank holds the same centers.

- CLS: for every global view q and every other view v (2 global + L local -> 2·(L + 1) pairs),
  mean over the batch of H(softmax((t_q - c)/τ_t), log_softmax(s_v/τ_s)), averaged over pairs.
- Patch: same view only; per image Σ over masked tokens of the cross-entropy between
  softmax((t - c')/τ'_t) and log_softmax(s/τ_s), divided by max(1, #masked); mean over the batch
  (unmasked crops count as 0) and over the global views.
- Loss = λ1·CLS + λ2·patch. τ_t and τ'_t follow per-epoch schedules (linear warm-up).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as td
import torch.nn.functional as F
from torch import nn

from attmask.eval import distributed as dist


def teacher_temperature_schedule(warmup_temp: float, temp: float, warmup_epochs: int, epochs: int,
                                 start_epoch: int = 0) -> np.ndarray:
    """Per-epoch teacher temperature: ``start_epoch`` epochs at ``warmup_temp`` (iBOT's
    ``pred_start_epoch`` for the patch temperature), then linear ``warmup_temp`` -> ``temp`` over
    ``warmup_epochs`` epochs (``np.linspace``, endpoints included, as the reference), then constant.
    Truncated to ``epochs`` entries for runs shorter than the warm-up.
    """
    parts = [np.full(start_epoch, warmup_temp), np.linspace(warmup_temp, temp, warmup_epochs),
             np.full(max(epochs - warmup_epochs - start_epoch, 0), temp)]
    return np.concatenate(parts)[:epochs].astype(np.float64)


def teacher_softmax(logits: torch.Tensor, center: torch.Tensor, temp: float) -> torch.Tensor:
    """softmax((logits - center) / temp) in float32; ``logits`` [..., K], ``center`` broadcastable."""
    return F.softmax((logits.float() - center) / temp, dim=-1)


def cls_loss(student_cls: torch.Tensor, teacher_probs: torch.Tensor, num_global: int,
             student_temp: float) -> torch.Tensor:
    """Cross-view CLS distillation.

    ``student_cls`` [V·B, K] logits of V views (globals first), ``teacher_probs`` [G·B, K] (centred,
    sharpened) of the G global views. Returns the mean over the G·(V - 1) pairs (q, v ≠ q) of the
    batch-mean cross-entropy.
    """
    views = student_cls.shape[0] // (teacher_probs.shape[0] // num_global)
    log_p = F.log_softmax(student_cls.float() / student_temp, dim=-1).chunk(views)
    targets = teacher_probs.chunk(num_global)
    total = student_cls.new_zeros((), dtype=torch.float32)
    pairs = 0
    for q, t in enumerate(targets):
        for v, s in enumerate(log_p):
            if v == q:
                continue
            total = total + torch.sum(-t * s, dim=-1).mean()
            pairs += 1
    if pairs == 0:
        raise ValueError("the CLS loss needs at least two views")
    return total / pairs


def masked_patch_loss(student_patch: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor,
                      student_temp: float) -> torch.Tensor:
    """Same-view masked-token distillation over the masked tokens only.

    ``student_patch`` [M', K'] logits and ``teacher_probs`` [M', K'] (centred, sharpened) whose first M
    rows are the M masked tokens in row-major order of ``masks`` [G·B, n] bool (rows past M, padding,
    are ignored). Per crop: Σ over its masked tokens of the cross-entropy / max(1, #masked); then the
    mean over all G·B crops (= the reference's batch mean per global view, averaged over views, since
    every view has B crops).
    """
    masks = masks.reshape(masks.shape[0], -1)
    crops = masks.shape[0]
    per_token = torch.sum(-teacher_probs * F.log_softmax(student_patch.float() / student_temp, dim=-1), dim=-1)
    crop_index = masks.nonzero(as_tuple=True)[0]
    per_token = per_token[: crop_index.shape[0]]
    per_crop = per_token.new_zeros(crops).index_add(0, crop_index, per_token)
    counts = masks.sum(dim=1).clamp(min=1).to(per_crop.dtype)
    return (per_crop / counts).mean()


@torch.no_grad()
def masked_mean_entropy(teacher_probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the patch targets of the M masked tokens (the first M rows of ``teacher_probs``
    [M', K']; ``masks`` [C, n] bool); 0 when no token is masked. No host synchronisation."""
    h = entropies(teacher_probs)
    count = masks.sum()
    valid = torch.arange(h.shape[0], device=h.device) < count
    return (h * valid).sum() / count.clamp(min=1)


@torch.no_grad()
def ema_center(center: torch.Tensor, batch_sum: torch.Tensor, count: int, momentum: float) -> torch.Tensor:
    """center·m + mean·(1 - m), the batch mean taken over every process (``batch_sum`` reduced in place)."""
    if dist.is_dist():
        td.all_reduce(batch_sum)
        count *= dist.world_size()
    return center * momentum + (batch_sum / count) * (1 - momentum)


TEACHER_STATS = ("teacher_entropy", "teacher_max_prob", "teacher_spread", "teacher_patch_entropy")
"""The monitors the losses return besides the loss terms (``teacher_patch_entropy``: iBOT only)."""


def entropies(probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of every row of ``probs`` [..., K]."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)


@torch.no_grad()
def teacher_stats(probs: torch.Tensor, logits: torch.Tensor, center: torch.Tensor) -> dict[str, torch.Tensor]:
    """Collapse monitors of the teacher's CLS outputs: the mean entropy and mean max probability of its
    targets ``probs`` [N, K], and ``teacher_spread``, the mean over the N crops of the standard deviation
    over the K prototypes of the centred logits ``logits - center`` (before the temperature).

    The spread does not depend on the temperature schedule: a random head gives about
    1/sqrt(bottleneck dim) (0.06 for 256), and a spread shrinking towards 0 is the uniform collapse
    (every crop's centred logits alike, targets uniform whatever the temperature)."""
    spread = (logits.float() - center).std(dim=-1).mean()
    return {"teacher_entropy": entropies(probs).mean(), "teacher_max_prob": probs.max(-1).values.mean(),
            "teacher_spread": spread}


class iBOTLoss(nn.Module):  # the reference name
    """CLS + masked-patch loss with its two centers (``center`` [1, K], ``center2`` [1, 1, K'])."""

    def __init__(self, out_dim: int, patch_out_dim: int, num_global: int, *, teacher_temps: np.ndarray,
                 teacher_patch_temps: np.ndarray, student_temp: float = 0.1, center_momentum: float = 0.9,
                 center_momentum2: float = 0.9, lambda1: float = 1.0, lambda2: float = 1.0) -> None:
        super().__init__()
        self.num_global = num_global
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.center_momentum2 = center_momentum2
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.teacher_temps = teacher_temps
        self.teacher_patch_temps = teacher_patch_temps
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("center2", torch.zeros(1, 1, patch_out_dim))

    def forward(self, student_cls: torch.Tensor, student_patch: torch.Tensor, teacher_cls: torch.Tensor,
                teacher_patch: torch.Tensor, teacher_patch_mean: torch.Tensor, masks: torch.Tensor,
                epoch: int) -> dict[str, torch.Tensor]:
        """Loss terms; updates the centers.

        ``student_cls`` [V·B, K]; ``student_patch`` [M', K'] and ``teacher_patch`` [M', K'] logits whose
        first M rows are the M masked tokens (row-major order of ``masks`` [G·B, h, w] bool; later rows
        are padding and ignored); ``teacher_cls`` [G·B, K];
        ``teacher_patch_mean`` [G·B, K'] the teacher's patch logits averaged over each crop's n tokens
        (for the center, as the reference's ``teacher_patch.mean(1)``).
        """
        flat = masks.reshape(masks.shape[0], -1)
        t_cls = teacher_softmax(teacher_cls, self.center, float(self.teacher_temps[epoch]))
        t_patch = teacher_softmax(teacher_patch, self.center2[0], float(self.teacher_patch_temps[epoch]))
        loss_cls = cls_loss(student_cls, t_cls, self.num_global, self.student_temp) * self.lambda1
        loss_patch = masked_patch_loss(student_patch, t_patch, flat, self.student_temp) * self.lambda2
        stats = teacher_stats(t_cls, teacher_cls, self.center)
        stats["teacher_patch_entropy"] = masked_mean_entropy(t_patch, flat)
        self.update_center(teacher_cls, teacher_patch_mean)
        return {"loss": loss_cls + loss_patch, "cls": loss_cls.detach(), "patch": loss_patch.detach(), **stats}

    @torch.no_grad()
    def update_center(self, teacher_cls: torch.Tensor, teacher_patch_mean: torch.Tensor) -> None:
        """``teacher_cls`` [G·B, K]; ``teacher_patch_mean`` [G·B, K'] (each crop's mean patch logits)."""
        cls_sum = teacher_cls.float().sum(dim=0, keepdim=True)
        self.center.copy_(ema_center(self.center, cls_sum, teacher_cls.shape[0], self.center_momentum))
        patch_sum = teacher_patch_mean.float().sum(dim=0, keepdim=True).unsqueeze(0)  # [1, 1, K']
        self.center2.copy_(ema_center(self.center2, patch_sum, teacher_patch_mean.shape[0], self.center_momentum2))


class DINOLoss(nn.Module):
    """CLS-only loss with its center ``center`` [1, K]."""

    def __init__(self, out_dim: int, num_global: int, *, teacher_temps: np.ndarray, student_temp: float = 0.1,
                 center_momentum: float = 0.9) -> None:
        super().__init__()
        self.num_global = num_global
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.teacher_temps = teacher_temps
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_cls: torch.Tensor, teacher_cls: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """``student_cls`` [V·B, K], ``teacher_cls`` [G·B, K]. Updates the center."""
        t_cls = teacher_softmax(teacher_cls, self.center, float(self.teacher_temps[epoch]))
        loss = cls_loss(student_cls, t_cls, self.num_global, self.student_temp)
        stats = teacher_stats(t_cls, teacher_cls, self.center)
        self.update_center(teacher_cls)
        return {"loss": loss, "cls": loss.detach(), "patch": torch.zeros((), device=loss.device), **stats}

    @torch.no_grad()
    def update_center(self, teacher_cls: torch.Tensor) -> None:
        cls_sum = teacher_cls.float().sum(dim=0, keepdim=True)
        self.center.copy_(ema_center(self.center, cls_sum, teacher_cls.shape[0], self.center_momentum))
