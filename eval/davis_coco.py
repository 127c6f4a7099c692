"""A small COCO-2017-layout instance set made from DAVIS frames and their ground-truth masks.

Real images with real masks for detection / instance-segmentation smoke runs and the demo, where
COCO images are not available: each selected frame becomes one image with one instance (the
annotated object), polygons traced from the mask (OpenCV outer contours), boxes from the mask
extent, and the object's COCO category with COCO's ids (blackswan -> bird, car-* / drift-* -> car,
dog / libby -> dog). Layout: ``dest/annotations/instances_<split>.json`` and ``dest/<split>/*.jpg``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_write_text
from .errors import BadInput

DAVIS_CATEGORIES = {"blackswan": "bird", "car-shadow": "car", "drift-chicane": "car", "dog": "dog", "libby": "dog"}
COCO_IDS = {"car": 3, "bird": 16, "dog": 18}


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a binary mask [H, W] as COCO polygons ``[x0, y0, x1, y1, ...]`` (>= 3 points)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [[float(v) for v in c.reshape(-1)] for c in contours if len(c) >= 3]


def davis_to_coco(davis_root: str | os.PathLike[str], dest: str | os.PathLike[str],
                  splits: dict[str, dict[str, list[int]]]) -> Path:
    """Write the instance set; ``splits``: split name -> {sequence: [frame indices]}. Returns ``dest``.

    ``davis_root`` is a DAVIS folder (``JPEGImages/480p``, ``Annotations/480p``). Sequences must be
    single-object ones listed in ``DAVIS_CATEGORIES``.
    """
    davis, dest = Path(davis_root), Path(dest)
    categories = [{"id": COCO_IDS[n], "name": n, "supercategory": "none"} for n in ("car", "bird", "dog")]
    image_id = ann_id = 0
    for split, frames in splits.items():
        (dest / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for seq, idxs in frames.items():
            if seq not in DAVIS_CATEGORIES:
                raise BadInput(davis / "JPEGImages" / "480p" / seq,
                               f"no COCO category for sequence {seq!r} (known: {', '.join(DAVIS_CATEGORIES)})")
            for f in idxs:
                frame = davis / "JPEGImages" / "480p" / seq / f"{f:05d}.jpg"
                label = davis / "Annotations" / "480p" / seq / f"{f:05d}.png"
                if not frame.is_file() or not label.is_file():
                    raise BadInput(frame, "frame or its annotation is missing")
                image_id += 1
                name = f"{seq}_{f:05d}.jpg"
                shutil.copyfile(frame, dest / split / name)
                mask = np.array(Image.open(label)) > 0
                h, w = mask.shape
                images.append({"id": image_id, "file_name": name, "height": h, "width": w})
                ys, xs = np.nonzero(mask)
                if len(xs) == 0:
                    continue
                x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": image_id,
                                    "category_id": COCO_IDS[DAVIS_CATEGORIES[seq]],
                                    "segmentation": mask_polygons(mask), "area": float(mask.sum()),
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})
        atomic_write_text(dest / "annotations" / f"instances_{split}.json",
                          json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return dest
