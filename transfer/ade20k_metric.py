"""Semantic-segmentation metrics: mIoU, mAcc, aAcc (percent), as mmsegmentation's ``IoUMetric``.

Per image, :func:`intersect_and_union` counts for every class c (pixels whose label is
``ignore_index`` are dropped first):

- ``intersect[c]`` = #pixels with prediction c and label c,
- ``pred[c]`` = #pixels predicted c, ``label[c]`` = #pixels labelled c,
- ``union[c]`` = pred[c] + label[c] - intersect[c].

The counts are summed over the whole split, then (:func:`segmentation_metrics`):

- IoU_c = intersect / union, Acc_c = intersect / label; a class with union 0 (resp. label 0) is
  undefined (NaN) and left out of the mean: ``mIoU = nanmean(IoU)``, ``mAcc = nanmean(Acc)``.
  A class that is predicted but absent from the labels has IoU 0 and counts in mIoU.
- ``aAcc = sum(intersect) / sum(label)`` (pixel accuracy).

Source: mmseg 1.x ``mmseg/evaluation/metrics/iou_metric.py`` (the ADE20K protocol of
BEiT / iBOT / AttMask). ADE20K labels: 0 = "other" (ignored), 1..150 = classes; mmseg's
``reduce_zero_label`` maps 0 -> 255 and c -> c - 1 (:func:`reduce_zero_label`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = 255


@dataclass
class AreaCounts:
    """Per-class pixel counts [C] (int64), summable over images."""

    intersect: torch.Tensor
    union: torch.Tensor
    pred: torch.Tensor
    label: torch.Tensor

    def __add__(self, other: AreaCounts) -> AreaCounts:
        return AreaCounts(self.intersect + other.intersect, self.union + other.union,
                          self.pred + other.pred, self.label + other.label)

    @staticmethod
    def zeros(num_classes: int) -> AreaCounts:
        z = torch.zeros(num_classes, dtype=torch.int64)
        return AreaCounts(z.clone(), z.clone(), z.clone(), z.clone())


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """ADE20K raw labels (0 = other, 1..150) -> training labels (255 = ignore, 0..149)."""
    out = label.astype(np.int64).copy()
    out[out == 0] = IGNORE_INDEX + 1
    out -= 1
    out[out == IGNORE_INDEX] = IGNORE_INDEX
    return out.astype(np.uint8)


def intersect_and_union(pred: torch.Tensor, label: torch.Tensor, num_classes: int,
                        ignore_index: int = IGNORE_INDEX) -> AreaCounts:
    """Counts of one image. ``pred``, ``label``: integer class maps [H, W] of equal shape."""
    if pred.shape != label.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape")
    pred = pred.reshape(-1).long()
    label = label.reshape(-1).long()
    keep = label != ignore_index
    pred, label = pred[keep], label[keep]
    if ((label < 0) | (label >= num_classes)).any():
        bad = int(label[(label < 0) | (label >= num_classes)][0])
        raise ValueError(f"label value {bad} outside [0, {num_classes}) and not the ignore index {ignore_index}")
    hit = pred[pred == label]
    area_intersect = torch.bincount(hit, minlength=num_classes)[:num_classes]
    valid_pred = pred[(pred >= 0) & (pred < num_classes)]
    area_pred = torch.bincount(valid_pred, minlength=num_classes)[:num_classes]
    area_label = torch.bincount(label, minlength=num_classes)[:num_classes]
    area_union = area_pred + area_label - area_intersect
    return AreaCounts(area_intersect, area_union, area_pred, area_label)


def per_class_iou_acc(counts: AreaCounts) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and accuracy per class [C] (float64, NaN where undefined)."""
    inter = counts.intersect.double()
    iou = inter / counts.union.double()
    acc = inter / counts.label.double()
    return iou, acc


def segmentation_metrics(counts: AreaCounts) -> dict[str, float]:
    """``{mIoU, mAcc, aAcc}`` in percent from split-level counts."""
    iou, acc = per_class_iou_acc(counts)
    total_label = int(counts.label.sum())
    if total_label == 0:
        raise ValueError("no labelled pixels: mIoU, mAcc and aAcc are undefined")
    return {
        "mIoU": float(np.nanmean(iou.numpy())) * 100.0,
        "mAcc": float(np.nanmean(acc.numpy())) * 100.0,
        "aAcc": float(counts.intersect.sum()) / total_label * 100.0,
    }
