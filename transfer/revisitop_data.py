"""Revisited Oxford / Paris data: the ground-truth pickle (read safely) and the dataset layout.

Layout (revisitop ``python/dataset.py``, DINO's ``OxfordParisDataset``)::

    <root>/<name>/gnd_<name>.pkl      dict: imlist [n_db] names, qimlist [n_q] names,
                                      gnd [n_q] dicts {bbx: [x1, y1, x2, y2], easy, hard, junk}
    <root>/<name>/jpg/<image>.jpg     database and query images (names without extension)

``easy`` / ``hard`` / ``junk`` are 0-based indices into ``imlist``; queries are not part of
``imlist``. The pickle is read with :func:`attmask.eval.safe_pickle.load_pickle`, which admits
only plain containers and numbers: a pickle that names any other global executes nothing and is
a ``BadInput``. The content is validated (types, index ranges, the three lists disjoint) so a
malformed file fails here with one line, not later with a traceback.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attmask.eval.datasets import dataset_dir, get_spec
from attmask.eval.errors import BadInput
from attmask.eval.safe_pickle import load_pickle

GND_LISTS = ("easy", "hard", "junk")


@dataclass(frozen=True)
class QueryGnd:
    """One query's ground truth: ``bbx`` (x1, y1, x2, y2) in the query image's pixels, or None."""

    bbx: tuple[float, float, float, float] | None
    easy: np.ndarray  # [n_easy] int64 indices into imlist
    hard: np.ndarray
    junk: np.ndarray

    def as_mapping(self) -> dict[str, np.ndarray]:
        return {"easy": self.easy, "hard": self.hard, "junk": self.junk}


@dataclass(frozen=True)
class RevisitopGnd:
    path: Path
    imlist: tuple[str, ...]
    qimlist: tuple[str, ...]
    gnd: tuple[QueryGnd, ...]

    @property
    def n_db(self) -> int:
        return len(self.imlist)

    @property
    def n_queries(self) -> int:
        return len(self.qimlist)


def _names(path: Path, obj: Any, key: str) -> tuple[str, ...]:
    if not isinstance(obj, list | tuple) or not all(isinstance(x, str) for x in obj):
        raise BadInput(path, f"malformed ground truth: {key!r} must be a list of image names")
    if not obj:
        raise BadInput(path, f"malformed ground truth: {key!r} is empty")
    return tuple(obj)


def _indices(path: Path, q: int, key: str, value: Any, n_db: int) -> np.ndarray:
    if isinstance(value, np.ndarray):
        items = value.reshape(-1).tolist() if value.dtype.kind in "iu" else None
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        items = None
    if items is None or not all(isinstance(i, int | np.integer) and not isinstance(i, bool) for i in items):
        raise BadInput(path, f"malformed ground truth: gnd[{q}][{key!r}] must be a list of integer indices")
    arr = np.asarray(items, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_db):
        raise BadInput(path, f"malformed ground truth: gnd[{q}][{key!r}] has indices outside [0, {n_db})")
    if np.unique(arr).size != arr.size:
        raise BadInput(path, f"malformed ground truth: gnd[{q}][{key!r}] repeats an index")
    return arr


def _bbx(path: Path, q: int, value: Any) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise BadInput(path, f"malformed ground truth: gnd[{q}]['bbx'] is not four numbers") from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
        raise BadInput(path, f"malformed ground truth: gnd[{q}]['bbx'] = {list(value)} is not [x1, y1, x2, y2]")
    return box  # type: ignore[return-value]


def load_gnd(path: str | os.PathLike[str]) -> RevisitopGnd:
    """Read and validate a revisitop ground-truth pickle (restricted unpickler)."""
    p = Path(path)
    if p.is_dir():
        raise BadInput(p, "is a folder, not a ground-truth pickle")
    raw = load_pickle(p)
    if not isinstance(raw, dict):
        raise BadInput(p, f"malformed ground truth: expected a dict, found {type(raw).__name__}")
    missing = [k for k in ("imlist", "qimlist", "gnd") if k not in raw]
    if missing:
        raise BadInput(p, f"malformed ground truth: missing {', '.join(missing)}")
    imlist = _names(p, raw["imlist"], "imlist")
    qimlist = _names(p, raw["qimlist"], "qimlist")
    entries = raw["gnd"]
    if not isinstance(entries, list | tuple) or len(entries) != len(qimlist):
        raise BadInput(p, f"malformed ground truth: 'gnd' must hold one entry per query ({len(qimlist)})")
    gnd = []
    for q, entry in enumerate(entries):
        if not isinstance(entry, dict) or any(k not in entry for k in GND_LISTS):
            raise BadInput(p, f"malformed ground truth: gnd[{q}] must be a dict with easy, hard, junk")
        lists = {k: _indices(p, q, k, entry[k], len(imlist)) for k in GND_LISTS}
        for a, b in (("easy", "hard"), ("easy", "junk"), ("hard", "junk")):
            if np.intersect1d(lists[a], lists[b]).size:
                raise BadInput(p, f"malformed ground truth: gnd[{q}] lists an image as both {a} and {b}")
        gnd.append(QueryGnd(bbx=_bbx(p, q, entry.get("bbx")), **lists))
    return RevisitopGnd(path=p, imlist=imlist, qimlist=qimlist, gnd=tuple(gnd))


@dataclass(frozen=True)
class RevisitopDataset:
    """A benchmark folder: its name (``roxford5k``...), ground truth and image folder."""

    name: str
    folder: Path  # <root>/<name>
    gnd: RevisitopGnd

    @property
    def image_dir(self) -> Path:
        return self.folder / "jpg"

    def image_path(self, name: str) -> Path:
        return self.image_dir / f"{name}.jpg"

    def check_images(self) -> None:
        """Every database and query image must exist (one line naming the first missing file)."""
        if not self.image_dir.is_dir():
            raise BadInput(self.image_dir, "no such folder (expected the revisitop layout <name>/jpg/*.jpg)")
        for name in (*self.gnd.imlist, *self.gnd.qimlist):
            path = self.image_path(name)
            if not path.is_file():
                raise BadInput(path, f"image listed in {self.gnd.path.name} is missing")


def open_folder(folder: str | os.PathLike[str]) -> RevisitopDataset:
    """``folder`` holds ``gnd_<name>.pkl`` and ``jpg/`` (revisitop layout)."""
    f = Path(folder)
    if not f.is_dir():
        raise BadInput(f, "no such folder (expected gnd_<name>.pkl and jpg/)")
    pickles = sorted(f.glob("gnd_*.pkl"))
    if len(pickles) != 1:
        found = ", ".join(p.name for p in pickles) or "none"
        raise BadInput(f, f"expected exactly one gnd_<name>.pkl here (found {found})")
    name = pickles[0].stem[len("gnd_"):]
    return RevisitopDataset(name=name, folder=f, gnd=load_gnd(pickles[0]))


def open_registered(name: str, root: str | os.PathLike[str] | None = None) -> RevisitopDataset:
    """A registry dataset of kind ``revisitop`` (``roxford5k``, ``rparis6k-mini``...)."""
    spec = get_spec(name, "revisitop")
    base = dataset_dir(name, root)
    return open_folder(base / (spec.subdir or name))
