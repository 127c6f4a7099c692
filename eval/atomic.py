"""Atomic file writes: a reader (or a killed writer) never sees a half-written file; and the
matching JSON read that turns an unreadable or malformed file into one ``BadInput`` line.

Everything is written to a temporary file in the destination folder, flushed and fsync'ed,
then moved into place with ``os.replace`` (atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import BadInput


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path``; on clean exit it replaces ``path``, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike[str], what: str = "") -> Any:
    """The parsed JSON of ``path``; ``BadInput`` naming the file when it cannot be read or parsed
    (``what`` names the expected content in the message, e.g. "COCO results JSON")."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(p, f"no such file (expected {what})" if what else "no such file")
    try:
        return json.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(p, f"cannot read {what or 'file'} ({exc})") from None
    except json.JSONDecodeError as exc:
        raise BadInput(p, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def atomic_save(path: str | os.PathLike[str], save_fn: Callable[[IO[bytes]], None]) -> None:
    """Atomically write whatever ``save_fn(fileobj)`` writes (``torch.save``, ``np.savez``...)."""
    with atomic_open(path, "wb") as fh:
        save_fn(fh)
