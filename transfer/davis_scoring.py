"""Scoring a folder of DAVIS results against the annotations (shared by ``davis`` and ``davis-score``).

Reads ``<results>/<seq>/<frame>.png`` for every annotated frame but the first and the last (the
official semi-supervised evaluation), scores it with :mod:`.davis_metrics`, and writes the
per-object CSV (the official per-sequence table, ``<seq>_<object>`` rows, plus recall and decay;
values in percent like the record). Every failure is a one-line ``BadInput`` naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attmask.eval.atomic import atomic_write_text
from attmask.eval.checkpoint import sha256_file
from attmask.eval.errors import BadInput

from .davis_io import VOID, DavisLayout, read_label_png
from .davis_metrics import METRIC_NAMES, ObjectScore, PredictionError, score_sequence

CSV_COLUMNS = ("sequence", *METRIC_NAMES, "frames")


@dataclass
class ScoredFolder:
    scores: list[ObjectScore]
    results: list[Path] = field(default_factory=list)  # every prediction file read
    annotations: list[Path] = field(default_factory=list)  # every annotation file read


def evaluated_annotations(layout: DavisLayout, seq: str, max_frames: int | None = None) -> list[Path]:
    """All annotation files of ``seq`` (the first ``max_frames`` when given); at least 3 are needed."""
    anns = layout.annotations(seq)
    if max_frames is not None:
        anns = anns[:max_frames]
    if len(anns) < 3:
        raise BadInput(layout.annotation_root / seq, f"{len(anns)} annotated frame(s): the first and last are "
                                                      "not evaluated, so at least 3 are needed")
    return anns


def _stack(paths: Sequence[Path]) -> np.ndarray:
    frames = [read_label_png(p) for p in paths]
    shape = frames[0].shape
    for p, f in zip(paths, frames):
        if f.shape != shape:
            raise BadInput(p, f"size {f.shape[1]}x{f.shape[0]} differs from the sequence's {shape[1]}x{shape[0]}")
    return np.stack(frames)


def score_folder(layout: DavisLayout, results: str | os.PathLike[str], sequences: Sequence[str],
                 max_frames: int | None = None) -> ScoredFolder:
    """Score ``results`` (official results layout) on ``sequences`` of ``layout``."""
    root = Path(results)
    if not root.is_dir():
        raise BadInput(root, "no such results folder (expected <results>/<sequence>/<frame>.png)")
    out = ScoredFolder(scores=[])
    for seq in sequences:
        anns = evaluated_annotations(layout, seq, max_frames)
        first = read_label_png(anns[0]).copy()
        first[first == VOID] = 0
        n_objects = int(first.max())
        if n_objects == 0:
            raise BadInput(anns[0], "the first annotation holds no object")
        scored_anns = anns[1:-1]
        preds = [root / seq / a.name for a in scored_anns]
        for p in preds:
            if not p.is_file():
                raise BadInput(p, f"missing prediction for annotated frame {p.stem} of {seq}")
        gt = _stack(scored_anns)
        pred = _stack(preds)
        try:
            out.scores.extend(score_sequence(seq, gt, pred, n_objects))
        except PredictionError as exc:
            raise BadInput(root / seq, str(exc)) from None
        out.results.extend(preds)
        out.annotations.extend([anns[0], *scored_anns])
    return out


def write_csv(path: str | os.PathLike[str], scores: Sequence[ObjectScore]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for s in scores:
        row = s.row()
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def digest_files(root: Path, files: Sequence[Path]) -> tuple[dict[str, str | int], list[str]]:
    """One ``inputs`` entry for a folder: sha256 over the sorted ``<sha256>  <relative path>`` lines
    of ``files`` (also returned, in ``sha256sum`` format, for a manifest next to the record)."""
    lines = sorted(f"{sha256_file(f)}  {f.relative_to(root).as_posix()}" for f in files)
    digest = hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()
    return {"path": str(root.resolve()), "sha256": digest, "files": len(files)}, lines
