"""Dataset registry (``configs/datasets.yaml``) and image-folder indexing.

``--dataset NAME`` resolves to ``$ATTMASK_DATA/<folder>``; ``--data DIR`` points at a folder in
the same layout. Classification datasets use the ImageFolder layout (``<split>/<class>/<image>``,
classes and files in sorted order, as torchvision's ``ImageFolder``); ``subset=N`` keeps the
first N images per class in that order (the "20% ImageNet" protocol uses N = 260).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInput
from .resources import config_root, load_yaml

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DATA_ENV = "ATTMASK_DATA"


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of the registry."""

    name: str
    kind: str
    folder: str | None
    train: str | None = None
    test: str | None = None
    subdir: str | None = None
    num_classes: int | None = None
    builtin: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def registry() -> dict[str, DatasetSpec]:
    path = config_root() / "datasets.yaml"
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise BadInput(path, "expected a mapping of dataset names")
    known = {"folder", "kind", "train", "test", "subdir", "num_classes", "builtin"}
    out = {}
    for name, entry in raw.items():
        extra = {k: v for k, v in entry.items() if k not in known}
        out[name] = DatasetSpec(
            name=name,
            kind=entry["kind"],
            folder=entry.get("folder"),
            train=entry.get("train"),
            test=entry.get("test"),
            subdir=entry.get("subdir"),
            num_classes=entry.get("num_classes"),
            builtin=entry.get("builtin"),
            extra=extra,
        )
    return out


def get_spec(name: str, kind: str | None = None) -> DatasetSpec:
    """The registry entry of ``name``; with ``kind``, also checked to be a dataset of that kind."""
    specs = registry()
    if name not in specs:
        raise BadInput(None, f"unknown dataset {name!r} (known: {', '.join(sorted(specs))})")
    spec = specs[name]
    if kind is not None and spec.kind != kind:
        raise BadInput(None, f"dataset {name!r} is a {spec.kind} dataset, not a {kind} one")
    return spec


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds all datasets: ``root`` if given, else ``$ATTMASK_DATA``."""
    if root is not None:
        return Path(root)
    env = os.environ.get(DATA_ENV)
    if not env:
        raise BadInput(None, f"${DATA_ENV} is not set: point it at the folder that holds the datasets, or pass --data DIR")
    return Path(env)


BUILTIN_ENV = "ATTMASK_BUILTIN"


def builtin_root() -> Path:
    env = os.environ.get(BUILTIN_ENV)
    return Path(env) if env else Path.home() / ".cache" / "attmask" / "builtin"


def materialise_sklearn_digits(dest: Path) -> Path:
    """scikit-learn's bundled digits (1,797 8×8 grey images, no download) as an ImageFolder.

    Written once to ``dest/{train,test}/<digit>/<index:04d>.png``; every fifth image (index % 5 == 4)
    is a test image (359), the rest train (1,438). Lets the classification tasks and the demo run
    on a machine without ``$ATTMASK_DATA``.
    """
    done = dest / ".complete"
    if done.exists():
        return dest
    import tempfile

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".digits-", dir=dest.parent))
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        split = "test" if i % 5 == 4 else "train"
        folder = tmp / split / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.asarray(img) * (255.0 / 16.0), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    (tmp / ".complete").write_text("sklearn.datasets.load_digits\n")
    try:
        os.replace(tmp, dest)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def dataset_dir(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Folder of a registered dataset (``$ATTMASK_DATA/<folder>``), checked to exist."""
    spec = get_spec(name)
    if spec.builtin == "sklearn-digits":
        return materialise_sklearn_digits(builtin_root() / "sklearn-digits")
    if spec.folder is None:
        raise BadInput(None, f"dataset {name!r} is built in and has no folder")
    path = data_root(root) / spec.folder
    if not path.is_dir():
        raise BadInput(path, f"dataset {name!r} not found (expected the {spec.kind} layout here; "
                             f"see `attmask-eval data prepare {name}`)")
    return path


def dataset_or_folder(dataset: str | None, data: str | os.PathLike[str] | None, kind: str,
                      usage: str) -> tuple[Path, DatasetSpec | None]:
    """The root of ``--dataset NAME`` (a registry dataset of ``kind``; its spec returned too) or of
    ``--data DIR`` (spec None). ``usage`` is the one-line hint when neither is given."""
    if dataset is not None:
        spec = get_spec(dataset, kind)
        return dataset_dir(dataset), spec
    if data is not None:
        root = Path(data)
        if not root.is_dir():
            raise BadInput(root, "no such dataset folder")
        return root, None
    raise BadInput(None, usage)


@dataclass(frozen=True)
class ImageIndex:
    """A sorted list of images with integer labels (ImageFolder semantics)."""

    root: Path
    paths: tuple[str, ...]  # relative to root, POSIX separators, sorted as ImageFolder
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def fingerprint(self) -> str:
        """sha256 over (relative path, size, mtime) of every file: any change gives a new value."""
        h = hashlib.sha256()
        h.update(str(self.classes).encode())
        for rel, label in zip(self.paths, self.labels):
            st = os.stat(self.root / rel)
            h.update(f"{rel}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def index_image_folder(folder: str | os.PathLike[str], subset: int | None = None,
                       offset: int = 0) -> ImageIndex:
    """Index ``folder/<class>/**/<image>`` in ImageFolder order; keep images [offset, offset+subset) per class."""
    root = Path(folder)
    if not root.is_dir():
        raise BadInput(root, "no such folder (expected <class>/<image> sub-folders)")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise BadInput(root, "no class sub-folders (expected the ImageFolder layout <class>/<image>)")
    paths: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        files: list[str] = []
        for dirpath, dirnames, filenames in os.walk(root / cls, followlinks=True):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            files.extend(f"{rel_dir}/{f}".replace(os.sep, "/") for f in sorted(filenames) if _is_image(f))
        if subset is not None:
            files = files[offset:offset + subset]
        elif offset:
            files = files[offset:]
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise BadInput(root, "no images found in the class sub-folders")
    return ImageIndex(root=root, paths=tuple(paths), labels=tuple(labels), classes=tuple(classes))


def index_images(folder: str | os.PathLike[str]) -> ImageIndex:
    """Every image under ``folder`` (recursively), sorted by relative path; labels are all 0."""
    root = Path(folder)
    if not root.is_dir():
        raise BadInput(root, "no such folder")
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for f in filenames:
            if _is_image(f):
                rel = f if rel_dir == "." else f"{rel_dir}/{f}"
                found.append(rel.replace(os.sep, "/"))
    if not found:
        raise BadInput(root, "no images found")
    found.sort()
    return ImageIndex(root=root, paths=tuple(found), labels=(0,) * len(found), classes=("",))


def classification_split(name: str | None, data: str | os.PathLike[str] | None, split: str | None,
                         which: str, root: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """Folder of a classification split: ``(<dataset dir>/<split>, split name)``.

    ``which`` is "train" or "test" and picks the registry default when ``split`` is None.
    With ``--data DIR`` and no registry entry, defaults are ``train`` and ``val`` (else ``test``).
    """
    if data is not None:
        base = Path(data)
        if not base.is_dir():
            raise BadInput(base, "no such dataset folder")
        spec = None
        if name is not None and name in registry():
            spec = get_spec(name)
    else:
        assert name is not None
        spec = get_spec(name)
        if spec.kind not in ("imagefolder", "builtin"):
            raise BadInput(None, f"dataset {name!r} is a {spec.kind} dataset, not an image-classification one")
        base = dataset_dir(name, root)
    if split is None:
        default = getattr(spec, which) if spec is not None else None
        if default is None:
            if which == "train":
                default = "train"
            else:
                default = "val" if (base / "val").is_dir() or not (base / "test").is_dir() else "test"
        split = default
    folder = base / split
    if not folder.is_dir():
        present = sorted(e.name for e in os.scandir(base) if e.is_dir())
        raise BadInput(folder, f"split {split!r} not found (expected <split>/<class>/<image>; "
                               f"sub-folders present: {', '.join(present) or 'none'})")
    return folder, split


def registry_name_for(path: str | os.PathLike[str], kind: str, root: str | os.PathLike[str] | None = None) -> str | None:
    """The registry name of ``kind`` whose folder holds ``path`` (a file or a dataset folder), if any.

    Used for default dataset labels of ``--data`` runs and scoring commands, so a mini ground truth
    is labelled ``roxford5k-mini``, never ``roxford5k``. The most specific (longest) matching folder
    wins; without ``$ATTMASK_DATA`` (and no ``root``) nothing matches.
    """
    target = Path(path).resolve()
    best: tuple[int, str] | None = None
    for spec in registry().values():
        if spec.kind != kind or spec.folder is None:
            continue
        try:
            base = dataset_dir(spec.name, root)
        except BadInput:
            continue
        folder = ((base / spec.subdir) if spec.subdir else base).resolve()
        if target == folder or folder in target.parents:
            depth = len(folder.parts)
            if best is None or depth > best[0]:
                best = (depth, spec.name)
    return best[1] if best else None
