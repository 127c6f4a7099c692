"""Checks of a dataset copy in the design's layout (``attmask-eval data verify``).

Each check is a ``Check(name, ok, detail)``; ``verify_folder`` runs the checks of a dataset kind
against a folder and the expected counts (``expect`` in ``configs/datasets.yaml``). What is checked:

- imagefolder: every split's images per class (total, per class where known), class names equal
  across splits (and to the official list where known), no empty files;
- revisitop: the gnd pickle loads (restricted unpickler) with ``imlist``/``qimlist``/``gnd``, every
  easy/hard/junk index is in range, every query has a positive, the counts, every listed image
  exists as ``jpg/<name>.jpg``, the gnd's checksum where one is published;
- davis: ``ImageSets/2017/<split>.txt`` sequence counts, every listed sequence has frames and an
  annotation for every frame (same frame names, same image size), frame numbers contiguous;
- coco: image counts of ``train2017``/``val2017``, the instance annotation files parse and every
  image they list exists (files over 256 MB are only checked to exist);
- ade20k: image counts per split, every image has its annotation PNG of the same size and vice versa;
- any kind: the files under the folder listed in ``<root>/SHA256SUMS`` match (when that file exists).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from .datasets import IMAGE_EXTENSIONS, DatasetSpec
from .downloads import Checksum, file_digest
from .errors import BadInput
from .safe_pickle import load_pickle

JSON_PARSE_LIMIT = 256 * 1024 * 1024


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"  {'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _few(items: list[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _expected(count: int, expected: int | None) -> tuple[bool, str]:
    if expected is None:
        return True, ""
    return count == expected, f" (expected {expected:,})"


# --------------------------------------------------------------------------- imagefolder

def _count_class_images(folder: Path) -> tuple[int, list[str]]:
    """(images under folder, recursively; relative names of empty image files)."""
    n, empty = 0, []
    for dirpath, _, filenames in os.walk(folder, followlinks=True):
        for f in filenames:
            if _is_image(f):
                n += 1
                if os.path.getsize(os.path.join(dirpath, f)) == 0:
                    empty.append(os.path.relpath(os.path.join(dirpath, f), folder.parent))
    return n, empty


def check_imagefolder(spec: DatasetSpec, path: Path, expect: Mapping[str, Any]) -> list[Check]:
    checks, class_sets = [], {}
    images = expect.get("images", {})
    per_class = expect.get("per_class", {})
    splits = [s for s in (spec.train, spec.test) if s is not None]
    for split in splits:
        folder = path / split
        if not folder.is_dir():
            checks.append(Check(split, False, f"missing folder {folder}"))
            continue
        classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
        class_sets[split] = classes
        counts, empty = {}, []
        for cls in tqdm(classes, desc=f"count {split}", unit="class", leave=False, disable=len(classes) < 100):
            counts[cls], e = _count_class_images(folder / cls)
            empty += e
        total = sum(counts.values())
        ok, note = _expected(total, images.get(split))
        detail = f"{total:,} images in {len(classes)} classes{note}"
        problems = []
        if spec.num_classes is not None and len(classes) != spec.num_classes:
            problems.append(f"{len(classes)} classes, expected {spec.num_classes}")
        expected_pc = per_class.get(split)
        if isinstance(expected_pc, int):
            off = [f"{c} {n}" for c, n in counts.items() if n != expected_pc]
            detail += f"; {expected_pc:,} per class"
        elif isinstance(expected_pc, Mapping):
            off = [f"{c} {counts.get(c, 0)} (expected {n})" for c, n in expected_pc.items() if counts.get(c, 0) != n]
            detail += "; " + ", ".join(f"{c} {n:,}" for c, n in expected_pc.items())
        else:
            off = [f"{c} 0" for c, n in counts.items() if n == 0]
        if off:
            problems.append(f"classes off the expected count: {_few(off)}")
        if empty:
            problems.append(f"empty files: {_few(empty)}")
        if not classes:
            problems.append("no class folders")
        checks.append(Check(split, ok and not problems, "; ".join([detail, *problems])))
    if class_sets:
        names = list(class_sets.values())
        same = all(n == names[0] for n in names)
        official = expect.get("classes")
        detail = "same class folders in " + ", ".join(class_sets) if same else \
            "class folders differ between " + ", ".join(class_sets)
        ok = same
        if official is not None:
            if names[0] == sorted(official):
                detail += " and equal to the official class names"
            else:
                ok = False
                detail += f"; expected the official names {_few(sorted(official))}"
        checks.append(Check("classes", ok, detail))
    return checks


# --------------------------------------------------------------------------- revisitop

def _gnd_problems(gnd: Any) -> tuple[list[str], list[str], list[str]]:
    """(imlist, qimlist, problems) of a revisitop ground-truth dict."""
    if not isinstance(gnd, dict) or not {"imlist", "qimlist", "gnd"} <= set(gnd):
        keys = sorted(gnd) if isinstance(gnd, dict) else type(gnd).__name__
        return [], [], [f"expected a dict with imlist, qimlist, gnd; got {keys}"]
    imlist, qimlist, entries = gnd["imlist"], gnd["qimlist"], gnd["gnd"]
    problems = []
    if not all(isinstance(x, str) for x in [*imlist, *qimlist]):
        return [], [], ["imlist / qimlist hold non-string names"]
    if len(entries) != len(qimlist):
        problems.append(f"{len(entries)} gnd entries for {len(qimlist)} queries")
    n = len(imlist)
    for q, e in enumerate(entries):
        if not isinstance(e, dict) or not {"bbx", "easy", "hard", "junk"} <= set(e):
            problems.append(f"query {q}: expected bbx, easy, hard, junk")
            continue
        if len(e["bbx"]) != 4:
            problems.append(f"query {q}: bbx has {len(e['bbx'])} values, expected 4")
        bad = [int(i) for key in ("easy", "hard", "junk") for i in e[key] if not 0 <= int(i) < n]
        if bad:
            problems.append(f"query {q}: indices out of range [0, {n}): {_few([str(b) for b in bad])}")
        if len(e["easy"]) + len(e["hard"]) == 0:
            problems.append(f"query {q}: no easy or hard positive")
    return list(imlist), list(qimlist), problems


def check_revisitop(spec: DatasetSpec, path: Path, expect: Mapping[str, Any],
                    checksums: Mapping[str, Checksum]) -> list[Check]:
    checks = []
    name = spec.subdir or path.name
    gnd_path = path / f"gnd_{name}.pkl"
    try:
        gnd = load_pickle(gnd_path)
    except BadInput as exc:
        return [Check("gnd", False, f"{gnd_path.name}: {exc.problem}")]
    try:
        imlist, qimlist, problems = _gnd_problems(gnd)
    except (TypeError, ValueError, KeyError) as exc:
        return [Check("gnd", False, f"{gnd_path.name}: malformed ground truth ({type(exc).__name__}: {exc})")]
    db_ok, db_note = _expected(len(imlist), expect.get("database"))
    q_ok, q_note = _expected(len(qimlist), expect.get("queries"))
    detail = f"{gnd_path.name}: {len(imlist):,} database images{db_note}, {len(qimlist)} queries{q_note}"
    if not problems:
        detail += ", every index in range, every query has a positive"
    checks.append(Check("gnd", db_ok and q_ok and not problems, "; ".join([detail, *problems[:3]])))
    known = checksums.get(gnd_path.name)
    if known is not None and gnd_path.is_file():
        got = file_digest(gnd_path, known.algo)
        checks.append(Check("gnd checksum", got == known.hexdigest,
                            f"{known.algo} {got}" + ("" if got == known.hexdigest else
                                                    f", expected {known.hexdigest} ({known.source})")))
    jpg = path / "jpg"
    if not jpg.is_dir():
        checks.append(Check("images", False, f"missing folder {jpg}"))
        return checks
    present = {e.name: e for e in os.scandir(jpg) if e.is_file()}
    listed = [f"{n}.jpg" for n in [*imlist, *qimlist]]
    missing = [n for n in listed if n not in present]
    empty = [n for n in listed if n in present and present[n].stat().st_size == 0]
    extra = len(set(present) - set(listed))
    detail = f"{len(listed) - len(missing):,} of {len(listed):,} listed images present in jpg/"
    if extra:
        detail += f" ({extra} other files, not used)"
    problems = ([f"missing: {_few(missing)}"] if missing else []) + ([f"empty: {_few(empty)}"] if empty else [])
    checks.append(Check("images", not problems, "; ".join([detail, *problems])))
    return checks


# --------------------------------------------------------------------------- davis

def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, SyntaxError):
        return None


def check_davis(path: Path, expect: Mapping[str, Any]) -> list[Check]:
    checks = []
    sequences = expect.get("sequences", {"val": None})
    frames_expected = expect.get("frames", {})
    for split, n_expected in sequences.items():
        listing = path / "ImageSets" / "2017" / f"{split}.txt"
        if not listing.is_file():
            checks.append(Check(f"{split} sequences", False, f"missing {listing}"))
            continue
        names = [s.strip() for s in listing.read_text().splitlines() if s.strip()]
        ok, note = _expected(len(names), n_expected)
        checks.append(Check(f"{split} sequences", ok, f"{len(names)} listed in ImageSets/2017/{split}.txt{note}"))
        problems, total = [], 0
        for seq in tqdm(names, desc=f"check {split}", unit="seq", leave=False, disable=len(names) < 20):
            fdir, adir = path / "JPEGImages" / "480p" / seq, path / "Annotations" / "480p" / seq
            frames = sorted(p.stem for p in fdir.glob("*.jpg")) if fdir.is_dir() else []
            annots = sorted(p.stem for p in adir.glob("*.png")) if adir.is_dir() else []
            total += len(frames)
            if not frames:
                problems.append(f"{seq}: no frames")
                continue
            if frames != annots:
                problems.append(f"{seq}: {len(frames)} frames, {len(annots)} annotations "
                                f"(differ: {_few(sorted(set(frames) ^ set(annots)))})")
                continue
            if frames != [f"{i:05d}" for i in range(len(frames))]:
                problems.append(f"{seq}: frame names are not 00000..{len(frames) - 1:05d}")
            for stem in frames:
                fs, as_ = _image_size(fdir / f"{stem}.jpg"), _image_size(adir / f"{stem}.png")
                if fs is None or as_ is None or fs != as_:
                    problems.append(f"{seq}/{stem}: frame {fs}, annotation {as_}")
                    break
        ok, note = _expected(total, frames_expected.get(split))
        detail = f"{total:,} frames{note}, every frame annotated at its size" if not problems else f"{total:,} frames{note}"
        checks.append(Check(f"{split} frames", ok and not problems, "; ".join([detail, *problems[:3]])))
    return checks


# --------------------------------------------------------------------------- coco

def check_coco(path: Path, expect: Mapping[str, Any]) -> list[Check]:
    checks = []
    for split, n_expected in expect.get("images", {"train2017": None, "val2017": None}).items():
        folder = path / split
        names = {e.name for e in os.scandir(folder) if e.is_file() and _is_image(e.name)} if folder.is_dir() else set()
        ok, note = _expected(len(names), n_expected)
        checks.append(Check(split, ok and folder.is_dir(),
                            f"{len(names):,} images{note}" if folder.is_dir() else f"missing folder {folder}"))
        ann = path / "annotations" / f"instances_{split}.json"
        if not ann.is_file():
            checks.append(Check(f"instances_{split}", False, f"missing {ann}"))
            continue
        size = ann.stat().st_size
        if size > JSON_PARSE_LIMIT:
            checks.append(Check(f"instances_{split}", True, f"present ({size / 2**20:.0f} MB, too large to parse here)"))
            continue
        try:
            data = json.loads(ann.read_bytes())
            listed = [im["file_name"] for im in data["images"]]
            n_ann = len(data["annotations"])
        except (ValueError, KeyError, TypeError) as exc:
            checks.append(Check(f"instances_{split}", False, f"cannot read ({type(exc).__name__}: {exc})"))
            continue
        missing = [n for n in listed if n not in names]
        detail = f"{len(listed):,} images, {n_ann:,} annotations"
        checks.append(Check(f"instances_{split}", not missing,
                            detail + (f"; images missing from {split}/: {_few(missing)}" if missing else
                                      f", every image present in {split}/")))
    return checks


# --------------------------------------------------------------------------- ade20k

def check_ade20k(path: Path, expect: Mapping[str, Any]) -> list[Check]:
    checks = []
    for split, n_expected in expect.get("images", {"training": None, "validation": None}).items():
        idir, adir = path / "images" / split, path / "annotations" / split
        if not idir.is_dir() or not adir.is_dir():
            checks.append(Check(split, False, f"missing folder {idir if not idir.is_dir() else adir}"))
            continue
        images = sorted(p.stem for p in idir.glob("*.jpg"))
        annots = sorted(p.stem for p in adir.glob("*.png"))
        ok, note = _expected(len(images), n_expected)
        problems = []
        if images != annots:
            problems.append(f"images without annotation or annotations without image: "
                            f"{_few(sorted(set(images) ^ set(annots)))}")
        else:
            for stem in tqdm(images, desc=f"check {split}", unit="img", leave=False, disable=len(images) < 1000):
                s_img, s_ann = _image_size(idir / f"{stem}.jpg"), _image_size(adir / f"{stem}.png")
                if s_img is None or s_img != s_ann:
                    problems.append(f"{stem}: image {s_img}, annotation {s_ann}")
                    break
        detail = f"{len(images):,} images{note}" + ("" if problems else ", each with its annotation at its size")
        checks.append(Check(split, ok and not problems, "; ".join([detail, *problems])))
    return checks


# --------------------------------------------------------------------------- checksums

def check_sha256sums(sums: Path, root: Path, path: Path) -> Check | None:
    """Files under ``path`` listed in ``sums`` (``sha256sum`` format, paths relative to ``root``)."""
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None
    entries = []
    for line in sums.read_text().splitlines():
        m = re.match(r"([0-9a-f]{64}) [ *](.+)$", line)
        if m:
            name = m.group(2)[2:] if m.group(2).startswith("./") else m.group(2)
            if name.startswith(rel + "/"):
                entries.append((m.group(1), name))
    if not entries:
        return None
    bad = [name for digest, name in entries
           if not (root / name).is_file() or file_digest(root / name, "sha256") != digest]
    detail = f"{len(entries) - len(bad):,} of {len(entries):,} files match {sums}"
    return Check("checksums", not bad, detail + (f"; missing or different: {_few(bad)}" if bad else ""))


def check_builtin(spec: DatasetSpec) -> list[Check]:
    if spec.builtin == "sklearn-digits":
        from sklearn.datasets import load_digits

        n = len(load_digits().target)
        return [Check("builtin", n == 1797, f"scikit-learn digits: {n} images (expected 1,797)")]
    return [Check("builtin", False, f"unknown built-in dataset {spec.builtin!r}")]


def verify_folder(spec: DatasetSpec, path: Path, expect: Mapping[str, Any],
                  checksums: Mapping[str, Checksum] | None = None, root: Path | None = None) -> list[Check]:
    """Every check of ``spec.kind`` on ``path``; plus ``<root>/SHA256SUMS`` when ``root`` has one."""
    checksums = checksums or {}
    if spec.kind == "imagefolder":
        checks = check_imagefolder(spec, path, expect)
    elif spec.kind == "revisitop":
        checks = check_revisitop(spec, path, expect, checksums)
    elif spec.kind == "davis":
        checks = check_davis(path, expect)
    elif spec.kind == "coco":
        checks = check_coco(path, expect)
    elif spec.kind == "ade20k":
        checks = check_ade20k(path, expect)
    else:
        raise BadInput(None, f"dataset {spec.name!r}: no checks for kind {spec.kind!r}")
    if root is not None and (root / "SHA256SUMS").is_file():
        sums = check_sha256sums(root / "SHA256SUMS", root, path)
        if sums is not None:
            checks.append(sums)
    return checks
