"""Atomic extraction of dataset archives (``attmask-eval data prepare``).

``staged_folder(target)`` yields a temporary sibling folder of ``target`` and renames it into place
only when the body finished cleanly (a killed or failed prepare leaves no half-written dataset).
The extractors write only regular files, at paths checked to stay inside the destination.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tqdm import tqdm

from .errors import BadInput

CHUNK = 1 << 20


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield ``<parent>/.<name>.staging-XXXX``; on clean exit it becomes ``target``, else it is removed.

    Parent folders created here are removed again on failure when they are left empty.
    """
    target = Path(target)
    if target.exists():
        raise BadInput(target, "already exists")
    missing = []
    parent = target.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        yield tmp
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def safe_member_path(archive: Path, name: str) -> str:
    """``name`` as a relative POSIX path that cannot leave the destination folder."""
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise BadInput(archive, f"unsafe member path {name!r} in the archive")
    norm = posixpath.normpath(name)
    if norm == "." or norm.startswith("../") or norm == "..":
        raise BadInput(archive, f"unsafe member path {name!r} in the archive")
    return norm


def _write(src: IO[bytes], dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)


def extract_zip(archive: Path, dest: Path, strip: str = "", progress: bool = True) -> int:
    """Extract the files of ``archive`` whose names start with ``strip`` (removed) into ``dest``.

    macOS metadata (``__MACOSX/``) is skipped. Member CRCs are checked while reading; a corrupt
    archive is a ``BadInput`` naming it. Returns the number of files written.
    """
    written = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
            for m in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress):
                if not m.filename.startswith(strip):
                    continue
                rel = safe_member_path(archive, m.filename[len(strip):])
                with zf.open(m) as src:
                    _write(src, dest / rel)
                written += 1
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise BadInput(archive, f"corrupt zip archive ({type(exc).__name__}: {exc})") from None
    return written


def extract_tar_flat(archive: Path, dest: Path, suffix: str, exclude: frozenset[str] = frozenset(),
                     progress: bool = True) -> tuple[int, list[str]]:
    """Write every regular member ``**/<name><suffix>`` of a (compressed) tar as ``dest/<name><suffix>``.

    Sub-folders inside the archive are dropped (the revisitop layout keeps all images in one
    folder); hidden names (``._x.jpg``) are skipped, names in ``exclude`` are skipped and returned.
    Two members with the same file name are an error. Returns (files written, names excluded).
    """
    written, excluded = 0, []
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tf:
            for m in tqdm(tf, desc=f"extract {archive.name}", unit="file", disable=not progress):
                base = posixpath.basename(m.name)
                if not m.isfile() or base.startswith(".") or not base.lower().endswith(suffix):
                    continue
                if base in exclude:
                    excluded.append(base)
                    continue
                out = dest / base
                if out.exists():
                    raise BadInput(archive, f"two members are named {base}")
                src = tf.extractfile(m)
                assert src is not None
                with src:
                    _write(src, out)
                written += 1
    except (tarfile.TarError, zlib.error, EOFError) as exc:
        raise BadInput(archive, f"corrupt tar archive ({type(exc).__name__}: {exc})") from None
    return written, excluded
