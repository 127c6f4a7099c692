"""Task ``coco``: COCO object detection + instance segmentation by fine-tuning the ViT with mmdet 3.x.

``attmask-eval coco --ckpt C --dataset coco2017 --out RUN_DIR [--config PRESET]`` fine-tunes the
pre-trained ViT (loaded strictly through the foundation's checkpoint import) inside a detector
and records box and mask AP / AR of the final model on ``val2017`` (``bbox_*``, ``segm_*``,
percent; COCOeval with maxDets 1 / 10 / 100, the metric core shared with ``coco-score``).

Presets (``configs/mmdet/``; PROTOCOLS.md §4, iBOT):

- ``cascade_mask_rcnn_vit_coco_1x`` (default): Cascade Mask R-CNN, iBOT's README command for
  ViT-S/16: 12 epochs, steps 8/11, layer decay 0.8, 8 GPUs x 4 images (``schedule: 1x``; the
  setting of the reported ViT-S numbers);
- ``cascade_mask_rcnn_vit_coco_3x``: iBOT's config file: 36 epochs, steps 27/33, layer decay
  0.75, 8 x 2 images (``schedule: 3x``);
- ``mask_rcnn_vit_coco_1x``: a lighter Mask R-CNN on the same recipe (not a reference setting);
- ``tiny_cascade_mask_rcnn_cpu``, ``tiny_mask_rcnn_cpu``: CPU smoke presets.

All: AdamW lr 1e-4, wd 0.05, DETR-style multi-scale training, ViT blocks (3, 5, 7, 11) -> BEiT /
iBOT multi-level adapter -> FPN, drop-path 0.1, mixed precision on GPU. Multi-GPU: launch
``attmask-eval coco`` under ``torchrun --nproc-per-node N``; the preset's total batch is per-GPU
images x processes (``--images-per-gpu``; the reference needs the preset's total; the common
``--batch-size``, a feature-extraction option, is not used).
``--test-only [--finetuned PTH]`` scores a fine-tuned detector without training; ``--resume``
continues an interrupted run from its last epoch checkpoint. Data: the official COCO 2017
layout (:mod:`.coco_data`), any category set (taken from the annotation file).

The written ``RUN_DIR/<record stem>-results.{bbox,segm}.json`` can be re-scored with
``attmask-eval coco-score``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .coco_data import DEFAULT_TEST, DEFAULT_TRAIN, resolve_layout
from .coco_metric import IOU_TYPES, MAX_DETS, metric_names
from .mm_runner import set_key
from .mm_task import DataInfo, MMTask


class CocoTask(MMTask):
    name = "coco"
    help = "COCO detection + instance segmentation: fine-tune with mmdet (Cascade Mask R-CNN), box / mask AP"
    description = __doc__
    kind = "mmdet"
    data_kind = "coco"
    default_preset = "cascade_mask_rcnn_vit_coco_1x"
    expected_metrics = tuple(metric_names("bbox") + metric_names("segm"))

    def resolve_data(self, args: argparse.Namespace, need_train: bool) -> DataInfo:
        layout = resolve_layout(args.dataset, args.data, args.train_split, args.test_split, need_train=need_train)
        extra: dict[str, Any] = {"layout": layout}
        return DataInfo(root=layout.root, train_split=layout.train.name if need_train else None,
                        test_split=layout.test.name, test_images=layout.test_images,
                        default_splits=(layout.train.name, layout.test.name) == (DEFAULT_TRAIN, DEFAULT_TEST),
                        extra=extra)

    def fill_data(self, cfg: Any, data: DataInfo) -> None:
        layout = data.extra["layout"]
        classes = tuple(layout.classes)
        splits = [("test_dataloader", layout.test)]
        if data.train_split is not None:
            splits.append(("train_dataloader", layout.train))
        for loader, split in splits:
            ds = cfg[loader].dataset
            ds.data_root = str(layout.root)
            ds.ann_file = str(split.ann_file.relative_to(layout.root))
            ds.data_prefix = dict(img=f"{split.name}/")
            ds.metainfo = dict(classes=classes)
        cfg.test_evaluator.ann_file = str(layout.test.ann_file)
        if set_key(cfg.model.roi_head, "num_classes", len(classes)) == 0:
            raise ValueError("the detector config has no num_classes under model.roi_head")

    def protocol_extra(self, cfg: Any, data: DataInfo) -> dict[str, Any]:
        return {
            "detector": cfg.attmask.get("detector"),
            "num_classes": len(data.extra["layout"].classes),
            "iou_types": _iou_types(cfg),
            "max_dets": list(MAX_DETS),
        }

    def set_outputs(self, cfg: Any, out: Path, stem: str) -> dict[str, str]:
        cfg.test_evaluator.outfile_prefix = str(out / f"{stem}-results")
        return {f"results_{t}": f"{stem}-results.{t}.json" for t in _iou_types(cfg)}


def _iou_types(cfg: Any) -> list[str]:
    metric = cfg.test_evaluator.get("metric", list(IOU_TYPES))
    return [metric] if isinstance(metric, str) else list(metric)


TASK = CocoTask()
