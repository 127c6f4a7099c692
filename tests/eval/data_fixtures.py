"""Offline stand-ins for dataset servers and archives (plain helpers for tests/eval/test_data_*.py).

- ``FileServer``: an HTTP server on 127.0.0.1 (a thread) that serves bytes by path, honours
  ``Range: bytes=N-`` (206 / 416; or ignores it, as some servers do), answers 404 for unknown
  paths, records every request and can drop transfers halfway (once, or always) to exercise resumption.
- ``cifar_tarball``: a tiny CIFAR-10 "python version" tarball in the official format: the same
  member names, dict keys and Python 2 pickles (protocol 2, ``str`` as Python 2 byte strings,
  numpy arrays reduced through ``numpy.core.multiarray._reconstruct``).
- ``ade_zip``: a tiny ``ADEChallengeData2016.zip`` with the official top folder and file names.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import socket
import struct
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# --------------------------------------------------------------------------- HTTP server

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        owner: FileServer = self.server.owner  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        owner.requests.append((self.path, rng))
        data = owner.files.get(self.path)
        if data is None:
            self.send_response(404, "Not Found")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        if rng and not owner.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416, "Range Not Satisfiable")
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206, "Partial Content")
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in owner.drop_once or self.path in owner.drop_always:
            owner.drop_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:  # a dropped socket is expected
        pass


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_once: set[str] = set()
        self.drop_always: set[str] = set()
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def closed_port_url(name: str) -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused, as with no network)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


# --------------------------------------------------------------------------- CIFAR python-version tarball

class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Protocol 2 with ``bytes`` written as Python 2 ``str`` opcodes, as cPickle wrote the official batches."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 2 names its module numpy._core; the official files (numpy 1.x era) say numpy.core.
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def _tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def cifar_tarball(train_labels: list[list[int]], test_labels: list[int], seed: int = 0
                  ) -> tuple[bytes, dict[str, np.ndarray]]:
    """A ``cifar-10-python.tar.gz`` with one ``data_batch_i`` per entry of ``train_labels``.

    Returns (tarball bytes, {"train": [N, 32, 32, 3] uint8, "test": ...} in split order).
    """
    rng = np.random.default_rng(seed)
    members: dict[str, bytes] = {}
    images: dict[str, list[np.ndarray]] = {"train": [], "test": []}

    def batch(label: str, labels: list[int], split: str) -> bytes:
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        images[split].append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        return py2_pickle({b"batch_label": label.encode(), b"labels": labels, b"data": data,
                           b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]})

    for i, labels in enumerate(train_labels, 1):
        members[f"data_batch_{i}"] = batch(f"training batch {i} of {len(train_labels)}", labels, "train")
    members["test_batch"] = batch("testing batch 1 of 1", test_labels, "test")
    members["batches.meta"] = py2_pickle({b"num_cases_per_batch": len(train_labels[0]),
                                          b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072})
    members["readme.html"] = b"<html>stand-in</html>"
    tarball = _tarball({f"cifar-10-batches-py/{k}": v for k, v in members.items()})
    return tarball, {k: np.concatenate(v) for k, v in images.items()}


def cifar100_tarball(per_class: int = 1, seed: int = 0) -> tuple[bytes, list[str], dict[str, np.ndarray]]:
    """A ``cifar-100-python.tar.gz`` (``train``, ``test``, ``meta``; fine and coarse labels), 100 classes.

    Returns (tarball bytes, fine class names, {"train": images, "test": images}); image i has fine
    label ``i % 100``.
    """
    rng = np.random.default_rng(seed)
    fine = [f"class_{i:03d}" for i in range(100)]
    members, images = {}, {}
    for split in ("train", "test"):
        n = 100 * per_class
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        images[split] = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        members[split] = py2_pickle({b"filenames": [f"{split}_{i}.png".encode() for i in range(n)],
                                     b"batch_label": f"{split}ing batch 1 of 1".encode(),
                                     b"fine_labels": [i % 100 for i in range(n)],
                                     b"coarse_labels": [i % 20 for i in range(n)], b"data": data})
    members["meta"] = py2_pickle({b"fine_label_names": [c.encode() for c in fine],
                                  b"coarse_label_names": [f"super_{i:02d}".encode() for i in range(20)]})
    return _tarball({f"cifar-100-python/{k}": v for k, v in members.items()}), fine, images


# --------------------------------------------------------------------------- ADE20K-like zip

def _encoded(mode: str, size: tuple[int, int], fmt: str, value: int) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(buf, format=fmt)
    return buf.getvalue()


def ade_zip(train: int = 2, val: int = 1, drop_annotation: str | None = None,
            extra_member: str | None = None) -> bytes:
    """``ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*`` JPEGs + label PNGs."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ADEChallengeData2016/objectInfo150.txt", "Idx\tRatio\tTrain\tVal\tName\n")
        for split, prefix, n in (("training", "ADE_train", train), ("validation", "ADE_val", val)):
            for i in range(1, n + 1):
                stem = f"{prefix}_{i:08d}"
                size = (40 + 8 * i, 30)
                zf.writestr(f"ADEChallengeData2016/images/{split}/{stem}.jpg", _encoded("RGB", size, "JPEG", 90 + i))
                if stem != drop_annotation:
                    zf.writestr(f"ADEChallengeData2016/annotations/{split}/{stem}.png",
                                _encoded("L", size, "PNG", i))
        if extra_member is not None:
            zf.writestr(extra_member, b"x")
    return buf.getvalue()
