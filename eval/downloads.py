"""Resumable, checksum-verified downloads (``attmask-eval data prepare``).

``fetch(remote, folder)`` downloads one file to ``folder/<filename>``:

- the bytes go to ``<filename>.part``; an existing ``.part`` is resumed with an HTTP ``Range``
  request (a server that ignores the range sends the whole file and the ``.part`` is rewritten);
  a connection dropped mid-transfer is resumed the same way, a few times, within one call;
- the published checksum (when there is one) is checked before the file gets its final name;
  a mismatch deletes the download and raises ``BadInput`` (nothing half-verified stays around);
- a final file that is already there and matches its checksum is not downloaded again;
- ``http(s)://`` and ``file://`` URLs (the latter for local mirrors of the archives);
- every failure a user can act on (404, no network, bad checksum) is one ``BadInput`` line
  naming the URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from .errors import BadInput

log = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "attmask-data/1 (+python urllib)"


@dataclass(frozen=True)
class Checksum:
    """A published digest of a file: ``algo`` is a :mod:`hashlib` name (md5, sha1, sha256)."""

    algo: str
    hexdigest: str
    source: str  # where the value is published (printed when it does not match)


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset recipe. ``checksum`` is None where no digest is published."""

    url: str
    checksum: Checksum | None = None

    @property
    def filename(self) -> str:
        name = Path(urllib.parse.urlparse(self.url).path).name
        if not name:
            raise BadInput(self.url, "URL does not end in a file name")
        return name

    def mirrored(self, mirror: str | None) -> RemoteFile:
        """The same file fetched from ``mirror`` (a base URL: ``<mirror>/<filename>``)."""
        if mirror is None:
            return self
        return RemoteFile(url=f"{mirror.rstrip('/')}/{self.filename}", checksum=self.checksum)


class _Interrupted(Exception):
    """The transfer stopped before the end; the ``.part`` file can be resumed."""


def file_digest(path: str | os.PathLike[str], algo: str, progress: bool = False) -> str:
    """Hex digest of a file (read in 1 MiB chunks; a tqdm bar for large files when ``progress``)."""
    h = hashlib.new(algo)
    size = os.path.getsize(path)
    with open(path, "rb") as fh, tqdm(total=size, unit="B", unit_scale=True, desc=f"{algo} {Path(path).name}",
                                      disable=not progress or size < 64 * CHUNK, leave=False) as bar:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def checksum_matches(path: Path, checksum: Checksum, progress: bool = False) -> tuple[bool, str]:
    got = file_digest(path, checksum.algo, progress)
    return got == checksum.hexdigest.lower(), got


def _total_from_content_range(value: str | None) -> int | None:
    """``bytes 100-199/200`` or ``bytes */200`` -> 200."""
    if not value:
        return None
    m = re.match(r"bytes\s+(?:\d+-\d+|\*)/(\d+)", value.strip())
    return int(m.group(1)) if m else None


def _copy_stream(read: Callable[[int], bytes], fh: BinaryIO, bar: tqdm) -> None:
    while True:
        try:
            chunk = read(CHUNK)
        except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
            raise _Interrupted(f"{type(exc).__name__}: {exc}") from None
        if not chunk:
            return
        fh.write(chunk)
        bar.update(len(chunk))


def _transfer_file_url(url: str, part: Path, progress: bool) -> None:
    src = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if not src.is_file():
        raise BadInput(url, "no such file")
    total = src.stat().st_size
    offset = part.stat().st_size if part.exists() else 0
    if offset > total:
        offset = 0
    with open(src, "rb") as inp, open(part, "ab" if offset else "wb") as fh, \
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[:-5], disable=not progress) as bar:
        inp.seek(offset)
        _copy_stream(inp.read, fh, bar)


def _transfer_http(url: str, part: Path, progress: bool, timeout: float) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # Range not satisfiable: the .part may already hold the whole file.
            total = _total_from_content_range(exc.headers.get("Content-Range"))
            exc.close()
            if total == offset:
                return
            part.unlink()
            raise _Interrupted(f"server refused to resume at byte {offset}; starting over") from None
        exc.close()
        raise BadInput(url, f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise BadInput(url, f"cannot connect ({exc.reason}); no network? (a local copy of the archives "
                            "can be used with --mirror file:///path/to/folder)") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        raise BadInput(url, f"cannot connect ({type(exc).__name__}: {exc}); no network?") from None
    with resp:
        if offset and resp.status == 206:
            mode = "ab"
            total = _total_from_content_range(resp.headers.get("Content-Range"))
        else:
            if offset:
                log.info("%s: the server does not resume downloads; starting over", url)
            mode, offset = "wb", 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        with open(part, mode) as fh, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                          desc=part.name[:-5], disable=not progress) as bar:
            _copy_stream(resp.read, fh, bar)
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"connection closed at byte {size} of {total}")
    if total is not None and size > total:
        part.unlink()
        raise BadInput(url, f"received {size} bytes, more than the announced {total}; the download was deleted")


def fetch(remote: RemoteFile, folder: str | os.PathLike[str], *, progress: bool = True, attempts: int = 4,
          timeout: float = 60.0, retry_wait: float = 2.0) -> Path:
    """Download ``remote`` into ``folder`` (resumable, verified); returns the final path.

    ``attempts``: transfers tried in this call when the connection drops (each resumes where the
    previous one stopped; waits ``retry_wait * (attempt - 1)`` seconds before attempt 2, 3, ...).
    """
    folder = Path(folder)
    final = folder / remote.filename
    if final.is_file():
        if remote.checksum is None:
            log.info("%s: already downloaded (no published checksum to re-check)", final)
            return final
        ok, _ = checksum_matches(final, remote.checksum, progress)
        if ok:
            log.info("%s: already downloaded, %s ok", final, remote.checksum.algo)
            return final
        log.warning("%s: does not match its %s; downloading it again", final, remote.checksum.algo)
        final.unlink()
    scheme = urllib.parse.urlparse(remote.url).scheme
    if scheme not in ("http", "https", "file"):
        raise BadInput(remote.url, f"unsupported URL scheme {scheme!r} (http, https or file)")
    folder.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    reason = ""
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            log.warning("%s: %s; resuming (attempt %d of %d)", remote.url, reason, attempt, attempts)
            time.sleep(retry_wait * (attempt - 2))
        try:
            if scheme == "file":
                _transfer_file_url(remote.url, part, progress)
            else:
                _transfer_http(remote.url, part, progress, timeout)
            break
        except _Interrupted as exc:
            reason = str(exc)
    else:
        kept = part.stat().st_size if part.exists() else 0
        raise BadInput(remote.url, f"download interrupted {attempts} times ({reason}); {kept} bytes kept in "
                                   f"{part}: run the command again to resume")
    if remote.checksum is not None:
        ok, got = checksum_matches(part, remote.checksum, progress)
        if not ok:
            part.unlink()
            raise BadInput(remote.url, f"{remote.checksum.algo} mismatch: expected {remote.checksum.hexdigest}, "
                                       f"got {got} ({remote.checksum.source}); the download was deleted")
    os.replace(part, final)
    return final


def remove_downloads(paths: list[Path]) -> None:
    """Delete downloaded archives (after a successful install) and their folder if it is left empty."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for folder in {p.parent for p in paths}:
        with contextlib.suppress(OSError):
            folder.rmdir()

