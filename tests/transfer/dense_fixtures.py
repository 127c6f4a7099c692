"""Helpers of the dense-transfer tests (COCO / ADE20K through mmdet / mmseg): real data, tiny models.

- :func:`davis_coco`: a tiny COCO-2017-layout instance set made from real DAVIS frames and their
  ground-truth masks (``$ATTMASK_DATA/davis-mini``): one instance per frame, polygons traced from
  the mask with OpenCV, the object's COCO category (blackswan -> bird, car-* / drift-* -> car,
  dog / libby -> dog, with COCO's category ids).
- :func:`tiny_checkpoint`: a random tiny ViT saved in the iBOT / AttMask pre-training layout
  (``teacher`` / ``student`` with ``backbone.`` / ``module.backbone.`` prefixes, ``args``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from attmask.eval.arch import build_vit, spec_from_name

DAVIS_CATEGORIES = {"blackswan": "bird", "car-shadow": "car", "drift-chicane": "car", "dog": "dog", "libby": "dog"}
COCO_IDS = {"car": 3, "bird": 16, "dog": 18}
TINY_ARCH = "vit_d64_l4_h2_patch16_64"


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a binary mask [H, W] as COCO polygons [x0, y0, x1, y1, ...] (>= 3 points)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= 3:
            polys.append([float(v) for v in c.reshape(-1)])
    return polys


def davis_coco(data_root: Path, dest: Path, splits: dict[str, dict[str, list[int]]]) -> Path:
    """Write ``dest/annotations/instances_<split>.json`` + ``dest/<split>/*.jpg`` from DAVIS frames.

    ``splits``: split name -> {sequence: [frame indices]}. Returns ``dest``.
    """
    davis = data_root / "davis-mini" / "DAVIS"
    categories = [{"id": COCO_IDS[n], "name": n, "supercategory": "none"} for n in ("car", "bird", "dog")]
    image_id = ann_id = 0
    for split, frames in splits.items():
        (dest / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for seq, idxs in frames.items():
            for f in idxs:
                image_id += 1
                name = f"{seq}_{f:05d}.jpg"
                shutil.copyfile(davis / "JPEGImages" / "480p" / seq / f"{f:05d}.jpg", dest / split / name)
                mask = np.array(Image.open(davis / "Annotations" / "480p" / seq / f"{f:05d}.png")) > 0
                h, w = mask.shape
                images.append({"id": image_id, "file_name": name, "height": h, "width": w})
                ys, xs = np.nonzero(mask)
                x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": COCO_IDS[DAVIS_CATEGORIES[seq]],
                                    "segmentation": mask_polygons(mask), "area": float(mask.sum()),
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})
        (dest / "annotations").mkdir(exist_ok=True)
        (dest / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return dest


def tiny_checkpoint(path: Path, arch: str = TINY_ARCH, seed: int = 0) -> Path:
    """A random ViT (default: 64-d, 4 blocks, 2 heads, patch 16) saved as an iBOT pre-training checkpoint."""
    spec = spec_from_name(arch)
    torch.manual_seed(seed)
    teacher = build_vit(spec).state_dict()
    student = build_vit(spec).state_dict()
    torch.save({
        "teacher": {f"backbone.{k}": v for k, v in teacher.items()},
        "student": {f"module.backbone.{k}": v for k, v in student.items()},
        "epoch": 1,
        "args": {"arch": arch, "num_heads": spec.num_heads, "patch_size": spec.patch_size},
    }, path)
    return path
