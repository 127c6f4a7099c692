"""COCO box / mask AP and AR: pycocotools' ``COCOeval`` with the standard summary, in percent.

The one metric core behind ``attmask-eval coco`` (through :mod:`.mm_metrics`) and
``attmask-eval coco-score``. It is ``COCOeval`` with its default parameters: IoU thresholds
0.50:0.05:0.95, area ranges all / small / medium / large and **maxDets 1 / 10 / 100**, i.e. the
12-number summary of cocoapi (``results/val2014_fake_eval_res.txt``) and of the papers. mmdet's
``CocoMetric`` defaults to ``proposal_nums = (100, 300, 1000)`` for the AR rows; we never use it
(PROTOCOLS.md §4).

Metric names (DESIGN.md "Interfaces"): ``{bbox,segm}_{AP, AP50, AP75, APs, APm, APl, AR1, AR10,
AR100, ARs, ARm, ARl}``, in the order of ``COCOeval.stats``, multiplied by 100. ``COCOeval``
returns -1 for a number that is undefined (no ground truth in that area range); such a number is
left out of the result (and logged), never written as a percentage.

Like mmdet's ``CocoMetric``, mask AP is computed after dropping the ``bbox`` of each segm result:
otherwise ``COCO.loadRes`` takes the box area as the instance area and the small / medium / large
split changes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from attmask.eval.atomic import read_json
from attmask.eval.errors import BadInput

log = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")
MAX_DETS = (1, 10, 100)
# Names of COCOeval.stats[0..11] with the standard maxDets (1, 10, 100).
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def metric_names(iou_type: str) -> list[str]:
    """The 12 record names of one IoU type, e.g. ``bbox_AP`` ... ``bbox_ARl``."""
    return [f"{iou_type}_{s}" for s in STAT_NAMES]


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, str]:
    """Run a pycocotools call with its prints captured (they go to the log instead)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        out = fn(*args, **kwargs)
    return out, buf.getvalue()


def load_ground_truth(path: str | os.PathLike[str]) -> COCO:
    """Read a COCO instances file (``images``, ``annotations``, ``categories``) into a ``COCO`` API."""
    p = Path(path)
    dataset = read_json(p, "COCO instances JSON")
    if not isinstance(dataset, dict):
        raise BadInput(p, "not COCO ground truth: expected an object with images, annotations, categories")
    missing = [k for k in ("images", "annotations", "categories") if k not in dataset]
    if missing:
        raise BadInput(p, f"not COCO instances ground truth: no {', '.join(missing)}")
    return coco_from_dataset(dataset, source=str(p))


def coco_from_dataset(dataset: dict[str, Any], source: str = "ground truth") -> COCO:
    """A ``COCO`` API over an in-memory instances dict (indexes built, prints captured)."""
    gt = COCO()
    gt.dataset = dataset
    try:
        _quiet(gt.createIndex)
    except (KeyError, TypeError) as exc:
        raise BadInput(source, f"malformed COCO ground truth ({type(exc).__name__}: {exc})") from None
    return gt


def load_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a COCO results file: a JSON list of ``{image_id, category_id, score, bbox|segmentation}``."""
    p = Path(path)
    results = read_json(p, "COCO results JSON")
    check_results(results, source=str(p))
    return results


def check_results(results: Any, source: str = "results") -> None:
    """Every entry must carry ``image_id``, ``category_id``, ``score`` and a ``bbox`` or ``segmentation``."""
    if not isinstance(results, list):
        raise BadInput(source, f"COCO results must be a JSON list of detections, not a {type(results).__name__}")
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise BadInput(source, f"result {i} is not an object")
        missing = [k for k in ("image_id", "category_id", "score") if k not in r]
        if missing:
            raise BadInput(source, f"result {i} has no {', '.join(missing)}")
        if "bbox" not in r and "segmentation" not in r:
            raise BadInput(source, f"result {i} has neither bbox nor segmentation")


def has_segmentations(results: Sequence[dict[str, Any]]) -> bool:
    return any("segmentation" in r for r in results)


def default_iou_types(results: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """DESIGN.md: both types when the results carry segmentations, else bbox."""
    return IOU_TYPES if has_segmentations(results) else ("bbox",)


def _results_for(results: Sequence[dict[str, Any]], iou_type: str, source: str) -> list[dict[str, Any]]:
    """Deep copies fit for ``COCO.loadRes`` (which mutates them); segm results lose their ``bbox``."""
    out = []
    for r in results:
        r = copy.deepcopy(dict(r))
        if iou_type == "segm":
            if "segmentation" not in r:
                raise BadInput(source, "mask AP asked for, but a result has no segmentation")
            r.pop("bbox", None)
        elif "bbox" not in r and "segmentation" not in r:
            raise BadInput(source, "a result has neither bbox nor segmentation")
        out.append(r)
    return out


def _load_res(gt: COCO, results: list[dict[str, Any]], source: str) -> COCO:
    if not results:  # COCO.loadRes cannot take an empty list: an empty detection set scores 0
        empty = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
        return coco_from_dataset(empty, source)
    gt_ids = set(gt.getImgIds())
    unknown = {r["image_id"] for r in results} - gt_ids
    if unknown:
        raise BadInput(source, f"results name {len(unknown)} image ids absent from the ground truth "
                               f"(e.g. {sorted(unknown)[:3]})")
    try:
        dt, _ = _quiet(gt.loadRes, results)
    except (KeyError, TypeError, ValueError, IndexError, AssertionError) as exc:
        raise BadInput(source, f"results cannot be loaded by pycocotools ({type(exc).__name__}: {exc})") from None
    return dt


def coco_summary(gt: COCO, results: Sequence[dict[str, Any]], iou_type: str,
                 img_ids: Sequence[int] | None = None, source: str = "results") -> dict[str, float]:
    """The 12 ``COCOeval`` summary numbers of one IoU type, in percent.

    ``gt``: ground truth; ``results``: COCO-format detections (``bbox`` [x, y, w, h] or RLE
    ``segmentation``, with ``score``); ``img_ids``: images to evaluate (default: every image of
    ``gt``, as ``COCOeval``). Returns ``{f"{iou_type}_{name}": value}`` for the names of
    :data:`STAT_NAMES` whose value is defined.
    """
    if iou_type not in IOU_TYPES:
        raise BadInput(None, f"unknown IoU type {iou_type!r} (choose from {', '.join(IOU_TYPES)})")
    dt = _load_res(gt, _results_for(results, iou_type, source), source)
    ev = COCOeval(gt, dt, iouType=iou_type)
    ev.params.maxDets = list(MAX_DETS)
    if img_ids is not None:
        ev.params.imgIds = list(img_ids)
    _, printed = _quiet(lambda: (ev.evaluate(), ev.accumulate(), ev.summarize()))
    log.info("COCOeval %s:\n%s", iou_type, printed.rstrip())
    stats = np.asarray(ev.stats, dtype=np.float64)
    out: dict[str, float] = {}
    for name, value in zip(metric_names(iou_type), stats):
        if value < 0:
            log.warning("%s is undefined on this ground truth (COCOeval -1: no instances in that range)", name)
            continue
        out[name] = float(value) * 100.0
    return out


def coco_metrics(gt: COCO, results_by_type: dict[str, Sequence[dict[str, Any]]],
                 img_ids: Sequence[int] | None = None, source: str = "results") -> dict[str, float]:
    """:func:`coco_summary` for each ``{iou_type: results}``, merged into one dict."""
    out: dict[str, float] = {}
    for iou_type, results in results_by_type.items():
        out.update(coco_summary(gt, results, iou_type, img_ids=img_ids, source=source))
    return out
