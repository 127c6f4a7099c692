"""mmseg evaluator over :mod:`.ade20k_metric`: mIoU, mAcc, aAcc in percent.

Registered as ``AttMaskIoUMetric`` in mmseg's ``METRICS``. Per image it counts intersection,
union, prediction and label areas (:func:`~.ade20k_metric.intersect_and_union`, on the CPU, so
the per-rank results gathered under torchrun are small tensors); the split totals give the three
numbers (:func:`~.ade20k_metric.segmentation_metrics`). Same definitions as mmseg's ``IoUMetric``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mmengine.evaluator import BaseMetric
from mmseg.registry import METRICS

from .ade20k_metric import (
    IGNORE_INDEX,
    AreaCounts,
    intersect_and_union,
    per_class_iou_acc,
    segmentation_metrics,
)

log = logging.getLogger(__name__)


@METRICS.register_module(force=True)
class AttMaskIoUMetric(BaseMetric):
    default_prefix = None

    def __init__(self, ignore_index: int = IGNORE_INDEX, collect_device: str = "cpu", prefix: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, **kwargs)  # unknown keys: mmengine's error
        self.ignore_index = ignore_index

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        num_classes = len(self.dataset_meta["classes"])
        for sample in data_samples:
            pred = sample["pred_sem_seg"]["data"].squeeze(0).cpu()
            label = sample["gt_sem_seg"]["data"].squeeze(0).cpu()
            self.results.append(intersect_and_union(pred, label, num_classes, self.ignore_index))

    def compute_metrics(self, results: list) -> dict[str, float]:
        classes = self.dataset_meta["classes"]
        total = AreaCounts.zeros(len(classes))
        for counts in results:
            total = total + counts
        iou, acc = per_class_iou_acc(total)
        for name, i, a in zip(classes, iou.tolist(), acc.tolist()):
            log.debug("%-20s IoU %6.2f  Acc %6.2f", name, 100 * i, 100 * a)
        return segmentation_metrics(total)
