"""Tiny pre-training configurations for CPU tests (seconds per run on 2 cores)."""

from __future__ import annotations

from typing import Any

from attmask.pretrain.config import PretrainConfig, build_config

TINY: dict[str, Any] = dict(
    arch="vit_d32_l2_h2", patch_size=8, global_crops_size=32, local_crops_size=16, local_crops_number=2,
    out_dim=128, patch_out_dim=128, head_hidden_dim=64, head_bottleneck_dim=32, drop_path=0.1,
    dataset="cifar10-mini", subset=4, batch_size_per_gpu=8, epochs=2, warmup_epochs=1, warmup_teacher_temp_epochs=1,
    teacher_temp=0.04, teacher_patch_temp=0.04, momentum_teacher=0.99, num_workers=0, eval_every=0, log_every=1,
    saveckp_freq=1, knn_resize=32, knn_crop=32, knn_batch_size=500, seed=3,
)


def tiny(**overrides: Any) -> PretrainConfig:
    return build_config({**TINY, **overrides})
