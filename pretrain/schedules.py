"""Per-iteration schedules (DINO / iBOT ``utils.cosine_scheduler``).

One value per training iteration, indexed by the global step ``epoch · iters_per_epoch + it``:

- learning rate: linear warm-up from 0 to ``lr · total_batch / 256`` over ``warmup_epochs``, then
  cosine to ``min_lr``;
- weight decay: cosine ``weight_decay`` -> ``weight_decay_end``;
- teacher EMA momentum: cosine ``momentum_teacher`` -> 1.

The schedules always span the configured ``epochs``; ``--max-steps`` only stops the run early, so a
stopped run is a prefix of the uninterrupted one (and resumes exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cosine_schedule(base_value: float, final_value: float, epochs: int, iters_per_epoch: int,
                    warmup_epochs: int = 0, start_warmup_value: float = 0.0) -> np.ndarray:
    """[epochs · iters_per_epoch] float64: linear warm-up, then a half cosine from base to final.

    v(i) = final + (base - final) · (1 + cos(π · i / I)) / 2 for i = 0 .. I - 1 after the warm-up.
    """
    warmup_iters = warmup_epochs * iters_per_epoch
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters) if warmup_iters > 0 else np.array([])
    iters = np.arange(epochs * iters_per_epoch - warmup_iters)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / max(len(iters), 1)))
    schedule = np.concatenate((warmup, cosine))
    assert len(schedule) == epochs * iters_per_epoch
    return schedule


def scaled_lr(lr: float, total_batch: int) -> float:
    """The linear scaling rule: ``lr`` is given for a total batch of 256."""
    return lr * total_batch / 256.0


@dataclass(frozen=True)
class Schedules:
    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray

    @property
    def total_steps(self) -> int:
        return len(self.lr)


def build_schedules(*, lr: float, min_lr: float, warmup_epochs: int, weight_decay: float, weight_decay_end: float,
                    momentum_teacher: float, epochs: int, iters_per_epoch: int, total_batch: int) -> Schedules:
    return Schedules(
        lr=cosine_schedule(scaled_lr(lr, total_batch), min_lr, epochs, iters_per_epoch, warmup_epochs=warmup_epochs),
        weight_decay=cosine_schedule(weight_decay, weight_decay_end, epochs, iters_per_epoch),
        momentum=cosine_schedule(momentum_teacher, 1.0, epochs, iters_per_epoch),
    )
