"""Online k-NN of the teacher during pre-training, through the harness's own k-NN core.

Features: the teacher backbone's CLS token after the final norm (``attmask.eval.features``, layer set
``cls``), extracted on the configured train split (the same ``subset`` as training, as the reference's
``--subset``) and the val split, resized / centre-cropped as ``knn_resize`` / ``knn_crop`` (reference:
256 / 224). Scores: ``attmask.eval.knn.knn_accuracy`` (weighted vote, T = 0.07, k ∈ ``nb_knn``;
metric names ``top1@k20`` ..., percent). Under torchrun every rank extracts a shard and gathers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from attmask.eval.datasets import ImageIndex
from attmask.eval.features import extract_features
from attmask.eval.transforms import EvalTransform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnnSetup:
    train: ImageIndex
    val: ImageIndex
    transform: EvalTransform
    ks: tuple[int, ...]
    temperature: float
    batch_size: int
    num_workers: int


def teacher_knn(backbone: nn.Module, setup: KnnSetup, device: torch.device) -> dict[str, float]:
    """k-NN metrics (percent) of ``backbone``'s CLS features; the model is left in train mode after."""
    from attmask.eval.knn import knn_accuracy

    was_training = backbone.training
    try:
        train = extract_features(backbone, setup.train, setup.transform, "cls", device, batch_size=setup.batch_size,
                                 num_workers=setup.num_workers, progress=False)
        val = extract_features(backbone, setup.val, setup.transform, "cls", device, batch_size=setup.batch_size,
                               num_workers=setup.num_workers, progress=False)
    finally:
        backbone.train(was_training)
    num_classes = max(len(setup.train.classes), len(setup.val.classes))
    metrics = knn_accuracy(torch.from_numpy(train.features), torch.from_numpy(train.labels),
                           torch.from_numpy(val.features), torch.from_numpy(val.labels),
                           ks=setup.ks, temperature=setup.temperature, num_classes=num_classes)
    return {k: float(v) for k, v in metrics.items()}
