"""Task ``ade20k``: ADE20K semantic segmentation by fine-tuning the ViT with mmsegmentation 1.x.

``attmask-eval ade20k --ckpt C --dataset ade20k --out RUN_DIR [--config PRESET]`` trains a
segmenter on the pre-trained ViT (loaded strictly through the foundation's checkpoint import) on
``images/training`` and records single-scale ``mIoU``, ``mAcc`` and ``aAcc`` (percent; mmseg's
``IoUMetric`` definitions, :mod:`.ade20k_metric`) of the final model on ``images/validation``,
with sliding-window inference (crop 512, stride 341).

Presets (``configs/mmseg/``; PROTOCOLS.md §4, iBOT):

- ``upernet_vit_ade20k_160k`` (default, the reported protocol): UperNet on ViT blocks
  (3, 5, 7, 11) through the final norm + the BEiT / iBOT multi-level adapter, 512 px crops,
  160k iterations, total batch 16, AdamW lr 3e-5, wd 0.05, layer decay 0.9, 1500 warm-up
  iterations + poly decay, drop-path 0.1, mixed precision on GPU;
- ``linear_vit_ade20k_160k``: the frozen-backbone linear head on the 4 layers concatenated;
- ``tiny_upernet_cpu``, ``tiny_linear_cpu``: CPU smoke presets.

Data: ADEChallengeData2016 (``--dataset ade20k``, ``--dataset ade20k-mini`` (validation only:
name the training split with ``--train-split validation`` for a smoke run) or ``--data DIR``).
Multi-GPU under ``torchrun`` (total batch = ``--images-per-gpu`` x processes; the common
``--batch-size`` is not used); ``--resume``, ``--test-only [--finetuned PTH]`` as for ``coco``.
"""

from __future__ import annotations

import argparse
from typing import Any

from .ade20k_data import DEFAULT_TEST, DEFAULT_TRAIN, NUM_CLASSES, resolve_layout
from .mm_task import DataInfo, MMTask

METRICS = ("mIoU", "mAcc", "aAcc")


class Ade20kTask(MMTask):
    name = "ade20k"
    help = "ADE20K semantic segmentation: fine-tune with mmseg (UperNet), single-scale mIoU"
    description = __doc__
    kind = "mmseg"
    data_kind = "ade20k"
    default_preset = "upernet_vit_ade20k_160k"
    expected_metrics = METRICS

    def resolve_data(self, args: argparse.Namespace, need_train: bool) -> DataInfo:
        layout = resolve_layout(args.dataset, args.data, args.train_split, args.test_split, need_train=need_train)
        default_splits = (layout.train is None or layout.train.name == DEFAULT_TRAIN) and layout.test.name == DEFAULT_TEST
        return DataInfo(root=layout.root, train_split=layout.train.name if layout.train else None,
                        test_split=layout.test.name, test_images=layout.test.count,
                        default_splits=bool(default_splits), extra={"layout": layout})

    def fill_data(self, cfg: Any, data: DataInfo) -> None:
        layout = data.extra["layout"]
        splits = [("test_dataloader", layout.test)]
        if layout.train is not None:
            splits.append(("train_dataloader", layout.train))
        for loader, split in splits:
            ds = cfg[loader].dataset
            ds.data_root = str(layout.root)
            ds.data_prefix = dict(img_path=f"images/{split.name}", seg_map_path=f"annotations/{split.name}")
        for head in ("decode_head", "auxiliary_head"):
            if cfg.model.get(head):
                cfg.model[head].num_classes = NUM_CLASSES

    def protocol_extra(self, cfg: Any, data: DataInfo) -> dict[str, Any]:
        test = cfg.model.get("test_cfg") or {}
        crop = cfg.model.data_preprocessor.get("size")
        return {
            "head": cfg.attmask.get("head"),
            "crop_size": list(crop) if crop is not None else None,
            "inference": test.get("mode"),
            "slide_crop": list(test["crop_size"]) if "crop_size" in test else None,
            "slide_stride": list(test["stride"]) if "stride" in test else None,
            "multi_scale": False,
        }


TASK = Ade20kTask()
