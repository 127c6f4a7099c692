"""Task ``coco-score``: score existing COCO-format results; writes a ``coco`` record.

``attmask-eval coco-score --gt ANN.json --results RES.json [--iou-type bbox|segm] --out RUN_DIR``
evaluates ``RES.json`` (a JSON list of ``{image_id, category_id, score, bbox | segmentation}``,
the format of cocoapi, mmdet's ``*.bbox.json`` / ``*.segm.json`` and the COCO server) against the
instances file ``ANN.json`` with the same metric core as ``attmask-eval coco``
(:mod:`.coco_metric`: ``COCOeval``, maxDets 1 / 10 / 100). Default IoU types: both when the
results carry segmentations, else bbox (DESIGN.md). The record has ``checkpoint: null`` and
``inputs`` (path + sha256 of both files); its ``dataset`` is ``--dataset-name``, else the
registered name when ``ANN.json`` lies in a registered COCO folder, else the file's stem.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attmask.eval.checkpoint import sha256_file
from attmask.eval.context import RunContext
from attmask.eval.errors import BadInput
from attmask.eval.tasks import Plan, Task, TaskResult

from .coco_data import registry_name_for_annotations, split_of_annotations
from .coco_metric import IOU_TYPES, MAX_DETS, coco_metrics, default_iou_types, load_ground_truth, load_results

EVALUATOR = "pycocotools COCOeval (default params; maxDets 1/10/100)"


class CocoScoreTask(Task):
    name = "coco-score"
    record_task = "coco"
    uses_backbone = False
    help = "score existing COCO results (box / mask AP, AR) with COCOeval; writes a coco record"
    description = __doc__

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--gt", required=True, metavar="JSON", help="COCO instances ground truth")
        parser.add_argument("--results", required=True, metavar="JSON", help="COCO-format results (a JSON list)")
        parser.add_argument("--iou-type", choices=IOU_TYPES, default=None,
                            help="score only this type (default: both when the results carry segmentations, "
                                 "else bbox)")

    def _iou_types(self, args: argparse.Namespace) -> tuple[str, ...]:
        if args.iou_type is not None:
            return (args.iou_type,)
        return default_iou_types(load_results(args.results))

    def plan(self, args: argparse.Namespace, ctx: RunContext) -> Plan:
        gt_path = Path(args.gt)
        label = args.dataset_name or registry_name_for_annotations(gt_path) or gt_path.stem
        protocol = {
            "scored": "existing",
            "iou_types": list(self._iou_types(args)),
            "max_dets": list(MAX_DETS),
            "evaluator": EVALUATOR,
            "reference": True,
        }
        return Plan(dataset=label, split=split_of_annotations(gt_path), protocol=protocol)

    def run(self, args: argparse.Namespace, ctx: RunContext, plan: Plan) -> TaskResult:
        gt = load_ground_truth(args.gt)
        results = load_results(args.results)
        metrics = coco_metrics(gt, {t: results for t in plan.protocol["iou_types"]}, source=str(args.results))
        if not metrics:
            raise BadInput(args.gt, "every COCOeval number is undefined on this ground truth (no instances)")
        inputs = [{"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for p in (args.gt, args.results)]
        return TaskResult(metrics=metrics, images=len(gt.getImgIds()), inputs=inputs)


TASK = CocoScoreTask()
