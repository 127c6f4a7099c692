"""Small helpers shared by the core tests (not fixtures: plain functions)."""

from __future__ import annotations

import shutil
from pathlib import Path


def mini_image_folder(data_root: Path, dest: Path, per_class: int = 3, classes: tuple[str, ...] = ("cat", "dog", "ship"),
                      splits: tuple[str, ...] = ("train", "test")) -> Path:
    """Copy a few real cifar10-mini images into ``dest/<split>/<class>/`` (an ImageFolder to mutate freely)."""
    for split in splits:
        for cls in classes:
            src = sorted((data_root / "cifar10-mini" / split / cls).iterdir())[:per_class]
            out = dest / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for f in src:
                shutil.copy2(f, out / f.name)
    return dest
