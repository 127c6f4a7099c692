"""mmdet components of the ``coco`` task: a checked dataset and the evaluator over :mod:`.coco_metric`.

- ``AttMaskCocoDataset`` (mmdet ``DATASETS``): mmdet's ``CocoDataset`` that refuses an annotation
  file whose categories do not give exactly ``metainfo['classes']`` in that order. mmdet maps
  category ids to labels in the order of the file's ``categories``, so a training file that lists
  them in another order than the test file would silently train other labels.
- ``AttMaskCocoMetric`` (mmdet ``METRICS``): mmdet's ``CocoMetric`` for everything mmdet-specific
  (collecting predictions, RLE-encoding masks, mapping labels to category ids, writing
  ``<outfile_prefix>.bbox.json`` / ``.segm.json``), then those very files are scored by the
  project's COCO core (COCOeval, maxDets 1 / 10 / 100), so ``attmask-eval coco`` and ``coco-score``
  share one metric and the written results can be re-scored with ``coco-score``. Metric names are
  the record's (``bbox_AP`` ... ``segm_ARl``, percent), without mmdet's ``coco/`` prefix.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mmdet.datasets import CocoDataset
from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import DATASETS, METRICS

from attmask.eval.errors import BadInput

from .coco_metric import IOU_TYPES, check_results, coco_summary


@DATASETS.register_module(force=True)
class AttMaskCocoDataset(CocoDataset):
    """``CocoDataset`` whose label order is checked against ``metainfo['classes']``."""

    def parse_data_info(self, raw_data_info: dict) -> dict | list[dict]:
        # Called while mmdet's load_data_list still holds the COCO API (it deletes it afterwards).
        if not getattr(self, "_labels_checked", False):
            self._check_labels()
            self._labels_checked = True
        return super().parse_data_info(raw_data_info)

    def _check_labels(self) -> None:
        classes = list(self.metainfo["classes"])
        found = [self.coco.cats[c]["name"] for c in self.cat_ids]
        if found != classes:
            missing = sorted(set(classes) - set(found))
            detail = f"missing {missing[:5]}" if missing else "in another order"
            raise BadInput(self.ann_file, f"categories differ from the test annotation file's ({detail}); "
                                          "labels would not match")


@METRICS.register_module(force=True)
class AttMaskCocoMetric(CocoMetric):
    """``CocoMetric`` whose numbers come from :func:`attmask.transfer.coco_metric.coco_summary`."""

    default_prefix = None

    def __init__(self, ann_file: str, metric: str | Sequence[str] = ("bbox", "segm"),
                 outfile_prefix: str | None = None, **kwargs: object) -> None:
        metrics = [metric] if isinstance(metric, str) else list(metric)
        unknown = [m for m in metrics if m not in IOU_TYPES]
        if unknown:
            raise ValueError(f"AttMaskCocoMetric scores {IOU_TYPES}, not {unknown}")
        super().__init__(ann_file=ann_file, metric=metrics, outfile_prefix=outfile_prefix, **kwargs)

    def compute_metrics(self, results: list) -> dict[str, float]:
        _gts, preds = zip(*results)
        with tempfile.TemporaryDirectory() as tmp:
            prefix = self.outfile_prefix or str(Path(tmp) / "results")
            if self.cat_ids is None:
                self.cat_ids = self._coco_api.get_cat_ids(cat_names=self.dataset_meta["classes"])
            if self.img_ids is None:
                self.img_ids = self._coco_api.get_img_ids()
            files = self.results2json(preds, prefix)
            out: dict[str, float] = {}
            for iou_type in self.metrics:
                if iou_type not in files:
                    raise RuntimeError(f"the model produced no {iou_type} results (a mask head is needed for segm)")
                dets = json.loads(Path(files[iou_type]).read_text())
                check_results(dets, source=files[iou_type])
                out.update(coco_summary(self._coco_api, dets, iou_type, img_ids=self.img_ids,
                                        source=files[iou_type]))
        return out
