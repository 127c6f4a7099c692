"""mIoU / mAcc / aAcc: hand-computed values on real ADE20K labels, and parity with mmseg's IoUMetric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attmask.transfer.ade20k_metric import (
    IGNORE_INDEX,
    AreaCounts,
    intersect_and_union,
    reduce_zero_label,
    segmentation_metrics,
)

NUM_CLASSES = 150


def ade_labels(data_root: Path) -> list[np.ndarray]:
    folder = data_root / "ade20k-mini" / "ADEChallengeData2016" / "annotations" / "validation"
    return [reduce_zero_label(np.array(Image.open(p))) for p in sorted(folder.glob("*.png"))]


def split_metrics(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    total = AreaCounts.zeros(NUM_CLASSES)
    for pred, label in pairs:
        total = total + intersect_and_union(torch.from_numpy(pred), torch.from_numpy(label), NUM_CLASSES)
    return segmentation_metrics(total)


def test_reduce_zero_label() -> None:
    raw = np.array([[0, 1, 2], [150, 0, 7]], dtype=np.uint8)
    assert reduce_zero_label(raw).tolist() == [[255, 0, 1], [149, 255, 6]]


def test_tiny_hand_example() -> None:
    label = torch.tensor([[0, 0, 1], [1, 2, IGNORE_INDEX]])
    pred = torch.tensor([[0, 1, 1], [1, 1, 0]])  # the last pixel is ignored whatever is predicted
    c = intersect_and_union(pred, label, 4)
    assert c.intersect.tolist() == [1, 2, 0, 0]
    assert c.pred.tolist() == [1, 4, 0, 0] and c.label.tolist() == [2, 2, 1, 0]
    assert c.union.tolist() == [2, 4, 1, 0]
    m = segmentation_metrics(c)
    # IoU: 1/2, 2/4, 0/1, class 3 undefined -> mean of three; Acc: 1/2, 2/2, 0/1; aAcc 3/5
    assert m["mIoU"] == pytest.approx(100 * (1 / 2 + 2 / 4 + 0) / 3)
    assert m["mAcc"] == pytest.approx(100 * (1 / 2 + 1 + 0) / 3)
    assert m["aAcc"] == pytest.approx(100 * 3 / 5)


def test_ground_truth_against_itself_is_100(data_root: Path) -> None:
    labels = ade_labels(data_root)
    assert len(labels) == 3
    m = split_metrics([(lab, lab) for lab in labels])
    assert m == {"mIoU": 100.0, "mAcc": 100.0, "aAcc": 100.0}


def test_known_perturbation(data_root: Path) -> None:
    """Predict every pixel of the most frequent class ``a`` as the second most frequent ``b``."""
    labels = ade_labels(data_root)
    valid = np.concatenate([lab[lab != IGNORE_INDEX] for lab in labels])
    classes, counts = np.unique(valid, return_counts=True)
    order = np.argsort(-counts)
    a, b = int(classes[order[0]]), int(classes[order[1]])
    n_a, n_b, k, n = int(counts[order[0]]), int(counts[order[1]]), len(classes), int(valid.size)
    preds = []
    for lab in labels:
        pred = lab.copy()
        pred[lab == a] = b
        pred[lab == IGNORE_INDEX] = a  # predictions on ignored pixels never count
        preds.append(pred)
    m = split_metrics(list(zip(preds, labels)))
    # by hand: IoU_a = 0, IoU_b = n_b / (n_a + n_b), the other k - 2 classes 1; Acc_a = 0, others 1;
    # aAcc = (n - n_a) / n
    assert m["mIoU"] == pytest.approx(100 * (k - 2 + n_b / (n_a + n_b)) / k)
    assert m["mAcc"] == pytest.approx(100 * (k - 1) / k)
    assert m["aAcc"] == pytest.approx(100 * (n - n_a) / n)
    assert m["mIoU"] < 100


def test_parity_with_mmseg_iou_metric(data_root: Path) -> None:
    from mmseg.evaluation.metrics import IoUMetric

    labels = ade_labels(data_root)
    rng = np.random.default_rng(0)
    preds = [np.where(rng.random(lab.shape) < 0.3, rng.integers(0, 20, lab.shape), lab).astype(np.int64)
             for lab in labels]
    ours = split_metrics(list(zip(preds, labels)))
    areas = [IoUMetric.intersect_and_union(torch.from_numpy(p), torch.from_numpy(lab.astype(np.int64)),
                                           NUM_CLASSES, IGNORE_INDEX) for p, lab in zip(preds, labels)]
    totals = [sum(a[i] for a in areas) for i in range(4)]
    theirs = IoUMetric.total_area_to_metrics(*totals, metrics=["mIoU"], nan_to_num=None, beta=1)
    assert ours["mIoU"] == pytest.approx(100 * np.nanmean(theirs["IoU"]), abs=1e-4)  # mmseg counts in float32
    assert ours["mAcc"] == pytest.approx(100 * np.nanmean(theirs["Acc"]), abs=1e-4)  # mmseg counts in float32
    assert ours["aAcc"] == pytest.approx(100 * float(theirs["aAcc"]), abs=1e-4)  # mmseg counts in float32


def test_label_outside_classes_is_an_error() -> None:
    with pytest.raises(ValueError, match="outside"):
        intersect_and_union(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 7), 4)
