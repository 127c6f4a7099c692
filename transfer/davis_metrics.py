"""DAVIS-2017 semi-supervised metrics: region J, boundary F, mean / recall / decay, in process.

Definitions (davisvideochallenge/davis2017-evaluation: ``davis2017/metrics.py`` ``db_eval_iou``,
``f_measure``, ``_seg2bmap``; ``davis2017/utils.py`` ``db_statistics``; ``davis2017/evaluation.py``),
reproduced in our own vectorised code:

- Per object o of a sequence (ids 1..n, n = the largest id of the first annotation) and per frame,
  masks ``gt == o`` and ``pred == o``. The first and the last frame are not evaluated.
- J = |gt ∩ pred| / |gt ∪ pred| over non-void pixels; 1 when the union is empty.
- F: boundary maps of both masks (void pixels zeroed first) by ``_seg2bmap`` (a pixel is boundary
  when it differs from its east, south or south-east neighbour; the last row / column compare
  only along the edge, the corner is 0), each dilated with a disk of radius
  ``ceil(0.008 * ||(H, W)||)`` (8 px at 480p; computed here as a nearest-boundary-pixel query,
  the same set without building dilated images); precision = |pred boundary ∩ dilated gt boundary|
  / |pred boundary|, recall = |gt boundary ∩ dilated pred boundary| / |gt boundary| (1 / 0 rules
  for empty boundaries as the reference), F = 2PR / (P + R), 0 when P + R = 0.
- Statistics over a sequence's evaluated frames: mean; recall = fraction of frames > 0.5;
  decay = mean of the first quarter minus mean of the last quarter, with the reference's bins
  ``ids = round(linspace(1, n, 5)) - 1``, bin i = frames ids[i]..ids[i+1] (both ends included).
- Overall: the mean over all objects of all sequences of each statistic;
  J&F-Mean = (J-Mean + F-Mean) / 2.

Void (label 255 in the ground truth) is excluded from J and F, which is what the reference's
``void_pixels`` arguments are for. (Its ``evaluation.py`` computes that mask after the loader has
already turned 255 into 0, so there void counts as background; DAVIS-2017 annotations carry no
255, so both agree on the benchmark.) A predicted id above the sequence's object count is an
error, as in the reference; an object that is never predicted scores as an empty mask.
Values are fractions here; :func:`summarize` returns the record's percent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree  # scipy comes with scikit-learn, a dependency

VOID = 255
BOUND_TH = 0.008
METRIC_NAMES = ("J&F_mean", "J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay")


def region_jaccard(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """J per frame [T] of binary masks ``gt``, ``pred`` [T, H, W] (bool); void pixels excluded."""
    valid = ~void if void is not None else np.ones_like(gt)
    inter = (gt & pred & valid).reshape(gt.shape[0], -1).sum(1)
    union = ((gt | pred) & valid).reshape(gt.shape[0], -1).sum(1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def boundary_map(seg: np.ndarray) -> np.ndarray:
    """``_seg2bmap`` for masks [T, H, W] (bool) at full resolution: 1-pixel boundaries [T, H, W]."""
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :, :-1] = seg[:, :, 1:]
    s[:, :-1, :] = seg[:, 1:, :]
    se[:, :-1, :-1] = seg[:, 1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[:, -1, :] = seg[:, -1, :] ^ e[:, -1, :]
    b[:, :, -1] = seg[:, :, -1] ^ s[:, :, -1]
    b[:, -1, -1] = False
    return b


def disk_radius(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """Dilation radius in pixels: ``bound_th`` itself when >= 1, else ceil(bound_th * diagonal)."""
    return int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(height, width)))


def matched_boundary(src: np.ndarray, dst: np.ndarray, radius: int) -> int:
    """|src ∩ dilate(dst, disk(radius))|: boundary pixels of ``src`` [H, W] within Euclidean
    distance ``radius`` of a boundary pixel of ``dst`` (the reference dilates ``dst`` with
    skimage's ``disk``, {dx² + dy² <= radius²}; a nearest-neighbour query gives the same set)."""
    src_pts, dst_pts = np.argwhere(src), np.argwhere(dst)
    if len(src_pts) == 0 or len(dst_pts) == 0:
        return 0
    dist, _ = cKDTree(dst_pts).query(src_pts, k=1, distance_upper_bound=radius + 0.5)
    # squared distances are integers, so sqrt(r²) <= r exactly and sqrt(r² + 1) > r + 1e-6
    return int(np.count_nonzero(dist <= radius + 1e-6))


def boundary_f(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None,
               bound_th: float = BOUND_TH) -> np.ndarray:
    """F per frame [T] of binary masks [T, H, W] (bool), the reference's ``f_measure``."""
    if void is not None:
        gt, pred = gt & ~void, pred & ~void
    radius = disk_radius(gt.shape[1], gt.shape[2], bound_th)
    gt_b, fg_b = boundary_map(gt), boundary_map(pred)
    out = np.zeros(gt.shape[0])
    for t in range(gt.shape[0]):
        n_fg, n_gt = int(fg_b[t].sum()), int(gt_b[t].sum())
        if n_fg == 0 and n_gt > 0:
            precision, recall = 1.0, 0.0
        elif n_fg > 0 and n_gt == 0:
            precision, recall = 0.0, 1.0
        elif n_fg == 0 and n_gt == 0:
            precision, recall = 1.0, 1.0
        else:
            precision = matched_boundary(fg_b[t], gt_b[t], radius) / n_fg
            recall = matched_boundary(gt_b[t], fg_b[t], radius) / n_gt
        out[t] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return out


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of per-frame values [T] (``db_statistics``)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no evaluated frames (a sequence needs at least 3 frames)")
    mean = float(np.nanmean(v))
    recall = float(np.mean(v > 0.5))
    ids = (np.round(np.linspace(1, v.size, 5) + 1e-10) - 1).astype(np.int64)
    first = v[ids[0]: ids[1] + 1]
    last = v[ids[3]: ids[4] + 1]
    decay = float(np.nanmean(first) - np.nanmean(last))
    return mean, recall, decay


@dataclass(frozen=True)
class ObjectScore:
    """One object of one sequence: per-frame J and F [T] over the evaluated frames."""

    sequence: str
    object_id: int
    j: np.ndarray
    f: np.ndarray

    def row(self) -> dict[str, float | str | int]:
        jm, jr, jd = statistics(self.j)
        fm, fr, fd = statistics(self.f)
        return {"sequence": f"{self.sequence}_{self.object_id}", "J&F_mean": 100 * (jm + fm) / 2,
                "J_mean": 100 * jm, "J_recall": 100 * jr, "J_decay": 100 * jd,
                "F_mean": 100 * fm, "F_recall": 100 * fr, "F_decay": 100 * fd, "frames": int(self.j.size)}


class PredictionError(ValueError):
    """A prediction the metric cannot score (the caller names the file)."""


def score_sequence(name: str, gt: np.ndarray, pred: np.ndarray, n_objects: int,
                   bound_th: float = BOUND_TH, chunk: int = 16) -> list[ObjectScore]:
    """J and F of every object over evaluated frames: ``gt``, ``pred`` [T, H, W] uint8 label maps
    of the frames to score (already without the first and last frame)."""
    if gt.shape != pred.shape:
        raise PredictionError(f"prediction shape {pred.shape} differs from the annotations' {gt.shape}")
    if pred.size and int(pred.max()) > n_objects:
        raise PredictionError(f"a predicted id ({int(pred.max())}) exceeds the sequence's {n_objects} object(s)")
    scores = []
    for o in range(1, n_objects + 1):
        js, fs = [], []
        for start in range(0, gt.shape[0], chunk):  # bounded memory on long sequences
            g, p = gt[start: start + chunk], pred[start: start + chunk]
            void = g == VOID
            js.append(region_jaccard(g == o, p == o, void))
            fs.append(boundary_f(g == o, p == o, void, bound_th))
        scores.append(ObjectScore(sequence=name, object_id=o, j=np.concatenate(js), f=np.concatenate(fs)))
    return scores


def summarize(scores: Sequence[ObjectScore]) -> dict[str, float]:
    """The record's metrics (percent): means over objects of mean / recall / decay, J&F-Mean."""
    if not scores:
        raise ValueError("no objects to summarise")
    j = np.array([statistics(s.j) for s in scores])  # [n_obj, 3]
    f = np.array([statistics(s.f) for s in scores])
    jm, jr, jd = j.mean(axis=0)
    fm, fr, fd = f.mean(axis=0)
    return {"J&F_mean": 100 * (jm + fm) / 2, "J_mean": 100 * jm, "J_recall": 100 * jr, "J_decay": 100 * jd,
            "F_mean": 100 * fm, "F_recall": 100 * fr, "F_decay": 100 * fd}
