"""Helpers of the dense-transfer tests (COCO / ADE20K through mmdet / mmseg): real data, tiny models.

- :func:`davis_coco`: a tiny COCO-2017-layout instance set made from real DAVIS frames and their
  ground-truth masks (``$ATTMASK_DATA/davis-mini``): one instance per frame, polygons traced from
  the mask with OpenCV, the object's COCO category (blackswan -> bird, car-* / drift-* -> car,
  dog / libby -> dog, with COCO's category ids).
- :func:`tiny_checkpoint`: a random tiny ViT saved in the iBOT / AttMask pre-training layout
  (``teacher`` / ``student`` with ``backbone.`` / ``module.backbone.`` prefixes, ``args``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from attmask.eval.arch import build_vit, spec_from_name
from attmask.eval.davis_coco import davis_to_coco

TINY_ARCH = "vit_d64_l4_h2_patch16_64"


def davis_coco(data_root: Path, dest: Path, splits: dict[str, dict[str, list[int]]]) -> Path:
    """The product's DAVIS -> COCO converter on ``$ATTMASK_DATA/davis-mini``."""
    return davis_to_coco(data_root / "davis-mini" / "DAVIS", dest, splits)


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
