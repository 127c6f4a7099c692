"""Optimizer parameter groups, per-parameter gradient clipping, last-layer freezing, teacher EMA.

Sources: DINO / iBOT ``utils.get_params_groups``, ``clip_gradients``, ``cancel_gradients_last_layer``
and the EMA update of ``train_one_epoch``.
"""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module) -> list[dict]:
    """Two groups: decayed weights, and biases + 1-D parameters (norms) without weight decay.

    Frozen parameters (``requires_grad`` False, e.g. a normalised last layer's ``weight_g``) are left
    out, as the reference. The weight-decay schedule is applied to group 0 only.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or p.ndim == 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(name: str, groups: list[dict]) -> torch.optim.Optimizer:
    """``adamw`` (the reference for ViTs) or ``sgd`` (momentum 0.9); lr and wd come from the schedules."""
    if name == "adamw":
        return torch.optim.AdamW(groups)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=0.9)
    raise ValueError(f"unknown optimizer {name!r} (adamw or sgd)")


def set_schedule_values(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = lr
        if i == 0:
            group["weight_decay"] = weight_decay


@torch.no_grad()
def clip_gradients(model: nn.Module, clip: float) -> list[torch.Tensor]:
    """Rescale each parameter's gradient to L2 norm ≤ ``clip`` (per parameter, not global); returns the norms."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return []
    norms = torch._foreach_norm(grads, 2)
    for g, n in zip(grads, norms):
        coef = clip / (n + 1e-6)
        g.mul_(torch.where(coef < 1, coef, torch.ones_like(coef)))
    return list(norms)


def cancel_last_layer_gradients(model: nn.Module, epoch: int, freeze_last_layer: int) -> None:
    """Drop the head's last-layer gradients during the first ``freeze_last_layer`` epochs."""
    if epoch >= freeze_last_layer:
        return
    for name, p in model.named_parameters():
        if "last_layer" in name:
            p.grad = None


def ema_pairs(student: nn.Module, teacher: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(student, teacher) parameters with the same name (the student's mask token has no teacher twin)."""
    s = dict(student.named_parameters())
    t = dict(teacher.named_parameters())
    names = [n for n in t if n in s]
    return [s[n].detach() for n in names], [t[n].detach() for n in names]


@torch.no_grad()
def ema_update(student_params: list[torch.Tensor], teacher_params: list[torch.Tensor], momentum: float) -> None:
    """teacher ← m · teacher + (1 - m) · student."""
    torch._foreach_mul_(teacher_params, momentum)
    torch._foreach_add_(teacher_params, student_params, alpha=1 - momentum)
