"""DAVIS-2017 files: the dataset layout, frame and annotation reading, indexed PNGs and the palette.

Layout (davis2017-evaluation's ``DAVIS(root, task='semi-supervised', subset=...)``)::

    <root>/JPEGImages/480p/<seq>/%05d.jpg
    <root>/Annotations/480p/<seq>/%05d.png    indexed PNG: 0 = background, 1..n = objects, 255 = void
    <root>/ImageSets/2017/<split>.txt         one sequence name per line

Results layout (what the official evaluation reads): ``<results>/<seq>/%05d.png``, indexed PNGs
with the frame names of the annotations.

Frame pre-processing follows DINO's ``read_frame`` / ``read_seg``: the shorter side becomes
``short_side`` (480) and the longer side ``floor(long * short_side / short / multiple) * multiple``
(multiple 64: 854 -> 832); colour normalisation with DINO's constants (note std 0.228 for red,
as the reference has it). The reference resizes with ``cv2.resize`` (bilinear, no antialiasing) on
uint8 BGR; here the same bilinear interpolation (half-pixel centres, no antialiasing) runs in
torch on the RGB pixels and is rounded back to uint8 as cv2 does, so values may differ from
cv2's fixed-point arithmetic by one grey level (measured on a davis-mini frame at 480x832: 0.08% of
the values, never more than one level). The first annotation is resized to the patch
grid with PIL's nearest neighbour (as ``read_seg``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from attmask.eval.errors import BadInput

DAVIS_MEAN = (0.485, 0.456, 0.406)
DAVIS_STD = (0.228, 0.224, 0.225)  # DINO eval_video_segmentation.color_normalize
VOID = 255


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map [n, 3] uint8 (the DAVIS palette): 0 black, 1 (128, 0, 0), 2 (0, 128, 0)...

    Colour of label i: bit j of each of its 3-bit groups, lowest group first, sets bit 7 - j of
    red, green and blue in turn.
    """
    labels = np.arange(n)
    rgb = np.zeros((n, 3), dtype=np.uint8)
    for j in range(8):
        for ch in range(3):
            rgb[:, ch] |= (((labels >> (3 * j + ch)) & 1) << (7 - j)).astype(np.uint8)
    return rgb


def write_indexed_png(path: str | os.PathLike[str], labels: np.ndarray) -> None:
    """Save a label map [H, W] (uint8) as a palette PNG with the DAVIS palette."""
    if labels.ndim != 2:
        raise ValueError(f"an indexed PNG needs a 2-D label map, got shape {labels.shape}")
    im = Image.fromarray(labels.astype(np.uint8))  # mode L; putpalette turns it into P
    im.putpalette(voc_palette().reshape(-1).tolist())
    im.save(path, format="PNG")


def read_label_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Label map [H, W] uint8 of an indexed (or greyscale) PNG; anything else is a BadInput."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "1"):
                raise BadInput(path, f"not an indexed PNG (mode {im.mode}); DAVIS masks are palette images")
            return np.array(im.convert("L") if im.mode == "1" else im, dtype=np.uint8)
    except FileNotFoundError:
        raise BadInput(path, "no such file") from None
    except (OSError, ValueError) as exc:
        raise BadInput(path, f"cannot read PNG ({exc})") from None


@dataclass(frozen=True)
class DavisLayout:
    """A DAVIS folder in the official layout (``resolution`` 480p)."""

    root: Path
    split: str = "val"
    resolution: str = "480p"

    @property
    def image_root(self) -> Path:
        return self.root / "JPEGImages" / self.resolution

    @property
    def annotation_root(self) -> Path:
        return self.root / "Annotations" / self.resolution

    @property
    def split_file(self) -> Path:
        return self.root / "ImageSets" / "2017" / f"{self.split}.txt"

    def sequences(self) -> list[str]:
        if not self.root.is_dir():
            raise BadInput(self.root, "no such folder (expected the DAVIS layout JPEGImages/, Annotations/, ImageSets/)")
        if not self.split_file.is_file():
            raise BadInput(self.split_file, f"sequence list of split {self.split!r} is missing")
        names = [line.strip() for line in self.split_file.read_text().splitlines() if line.strip()]
        if not names:
            raise BadInput(self.split_file, "lists no sequences")
        return names

    def frames(self, seq: str) -> list[Path]:
        folder = self.image_root / seq
        frames = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
        if not frames:
            raise BadInput(folder, f"no frames for sequence {seq!r}")
        return frames

    def annotations(self, seq: str) -> list[Path]:
        folder = self.annotation_root / seq
        masks = sorted(folder.glob("*.png")) if folder.is_dir() else []
        if not masks:
            raise BadInput(folder, f"no annotations for sequence {seq!r}")
        return masks


def select_sequences(available: list[str], wanted: list[str] | None, source: Path) -> list[str]:
    """``wanted`` (in the split's order) or all; an unknown name is a BadInput."""
    if not wanted:
        return available
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise BadInput(source, f"sequence(s) {', '.join(unknown)} not in this split ({', '.join(available)})")
    return [s for s in available if s in set(wanted)]


def propagation_size(height: int, width: int, short_side: int = 480, multiple: int = 64) -> tuple[int, int]:
    """(H', W') of DINO's ``read_frame``: short side -> ``short_side``, long side floored to ``multiple``."""
    if height > width:
        w2 = short_side
        h2 = int(((short_side * height / width) // multiple) * multiple)
    else:
        h2 = short_side
        w2 = int(((short_side * width / height) // multiple) * multiple)
    if h2 < 1 or w2 < 1:
        raise BadInput(None, f"a {width}x{height} frame becomes {w2}x{h2} with short side {short_side} and "
                             f"long side a multiple of {multiple}: choose a larger --short-side or smaller --long-multiple")
    return h2, w2


def read_frame(path: str | os.PathLike[str], size: tuple[int, int]) -> torch.Tensor:
    """Normalised frame [3, H', W'] (float32) resized to ``size`` = (H', W')."""
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise BadInput(path, f"cannot read frame ({exc})") from None
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
        x = x.round().clamp(0, 255)  # cv2.resize returns uint8
    x = x[0] / 255.0
    mean = torch.tensor(DAVIS_MEAN)[:, None, None]
    std = torch.tensor(DAVIS_STD)[:, None, None]
    return (x - mean) / std


def first_frame_labels(path: str | os.PathLike[str], grid: tuple[int, int]) -> tuple[np.ndarray, torch.Tensor, int]:
    """The first annotation: (full-resolution labels [H, W] uint8, labels at the patch grid
    [h, w] int64 (PIL nearest), number of objects). Void (255) counts as background, as the
    official loader reads annotations."""
    full = read_label_png(path).copy()
    full[full == VOID] = 0
    n_objects = int(full.max())
    h, w = grid
    small = np.array(Image.fromarray(full).resize((w, h), Image.Resampling.NEAREST))
    return full, torch.from_numpy(small.astype(np.int64)), n_objects


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize (PIL) of a label map [H, W] uint8 to ``size`` = (H', W')."""
    h, w = size
    if labels.shape == (h, w):
        return labels
    return np.array(Image.fromarray(labels.astype(np.uint8)).resize((w, h), Image.Resampling.NEAREST))
