"""Per-iteration schedules (DINO / iBOT ``cosine_scheduler``)."""

from __future__ import annotations

import math

import numpy as np

from attmask.pretrain.schedules import build_schedules, cosine_schedule, scaled_lr


def test_cosine_schedule_with_warmup() -> None:
    s = cosine_schedule(1.0, 0.0, epochs=4, iters_per_epoch=5, warmup_epochs=1)
    assert len(s) == 20
    np.testing.assert_allclose(s[:5], np.linspace(0, 1, 5))
    assert s[5] == 1.0  # cosine starts at the base value
    np.testing.assert_allclose(s[5:], 0.5 * (1 + np.cos(np.pi * np.arange(15) / 15)))
    assert np.all(np.diff(s[5:]) < 0) and s[-1] > 0


def test_schedules_of_a_run() -> None:
    sch = build_schedules(lr=5e-4, min_lr=1e-6, warmup_epochs=10, weight_decay=0.04, weight_decay_end=0.4,
                          momentum_teacher=0.996, epochs=100, iters_per_epoch=7, total_batch=240)
    assert sch.total_steps == 700
    assert math.isclose(sch.lr[69], scaled_lr(5e-4, 240)) and math.isclose(scaled_lr(5e-4, 240), 5e-4 * 240 / 256)
    assert sch.lr[0] == 0.0 and sch.lr[-1] > 1e-6 and math.isclose(sch.lr[-1], 1e-6, rel_tol=1e-2)
    assert math.isclose(sch.weight_decay[0], 0.04) and math.isclose(sch.weight_decay[-1], 0.4, rel_tol=1e-3)
    assert math.isclose(sch.momentum[0], 0.996) and sch.momentum[-1] < 1 and math.isclose(sch.momentum[-1], 1, abs_tol=1e-6)
    assert np.all(np.diff(sch.momentum) >= 0)
