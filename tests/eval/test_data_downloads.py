"""``downloads.fetch`` edge cases against a local HTTP server (no internet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from attmask.eval.downloads import Checksum, RemoteFile, fetch
from attmask.eval.errors import BadInput

from .data_fixtures import FileServer, md5

PAYLOAD = bytes(range(256)) * 400  # 100 KiB


def _remote(server: FileServer, checksum: bool = True) -> RemoteFile:
    return RemoteFile(f"{server.url}/blob.bin", Checksum("md5", md5(PAYLOAD), "test") if checksum else None)


def test_a_complete_part_file_is_finished_without_downloading_it_again(tmp_path: Path) -> None:
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD)
    with FileServer() as server:
        server.files["/blob.bin"] = PAYLOAD
        path = fetch(_remote(server), tmp_path, progress=False)
        assert server.requests == [("/blob.bin", f"bytes={len(PAYLOAD)}-")]  # answered 416 with the size
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "blob.bin.part").exists()


def test_a_server_that_ignores_range_rewrites_the_part_file(tmp_path: Path) -> None:
    (tmp_path / "blob.bin.part").write_bytes(b"garbage")
    with FileServer() as server:
        server.files["/blob.bin"] = PAYLOAD
        server.ignore_range = True
        assert fetch(_remote(server), tmp_path, progress=False).read_bytes() == PAYLOAD


def test_repeated_drops_keep_the_part_file_for_the_next_run(tmp_path: Path) -> None:
    with FileServer() as server:
        server.files["/blob.bin"] = PAYLOAD
        server.drop_always.add("/blob.bin")
        with pytest.raises(BadInput, match="interrupted 3 times.*run the command again to resume"):
            fetch(_remote(server), tmp_path, progress=False, attempts=3, retry_wait=0)
        kept = (tmp_path / "blob.bin.part").stat().st_size
        assert 0 < kept < len(PAYLOAD)
        server.drop_always.clear()
        assert fetch(_remote(server), tmp_path, progress=False).read_bytes() == PAYLOAD
        assert server.requests[-1] == ("/blob.bin", f"bytes={kept}-")


def test_without_a_published_checksum_the_length_is_still_checked(tmp_path: Path) -> None:
    with FileServer() as server:
        server.files["/blob.bin"] = PAYLOAD
        server.drop_always.add("/blob.bin")
        with pytest.raises(BadInput, match="interrupted"):
            fetch(_remote(server, checksum=False), tmp_path, progress=False, attempts=2, retry_wait=0)
    assert not (tmp_path / "blob.bin").exists()  # a short file never gets the final name


def test_file_url_errors_and_unsupported_schemes(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        fetch(RemoteFile((tmp_path / "absent.zip").as_uri()), tmp_path / "dl", progress=False)
    with pytest.raises(BadInput, match="unsupported URL scheme 'ftp'"):
        fetch(RemoteFile("ftp://example.org/x.zip"), tmp_path / "dl", progress=False)
