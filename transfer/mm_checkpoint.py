"""Loading mmengine checkpoints safely (resume, ``--test-only``) on torch >= 2.6.

mmengine 0.10 calls ``torch.load(filename, map_location)``; torch >= 2.6 then unpickles with
``weights_only=True``, which rejects what mmengine itself stores: numpy arrays and scalars (RNG
state, message hub) and ``HistoryBuffer`` objects whose statistics methods pickle as
``getattr(HistoryBuffer, 'min')``. Allow-listing ``builtins.getattr`` in torch's weights-only
unpickler would admit any attribute of any allowed object, so instead the local loader of
mmengine's ``CheckpointLoader`` is replaced, for the duration of a run
(:func:`restricted_local_loader`), by ``torch.load`` with a restricted pickle module: only the
globals below are found, and ``getattr`` is a guarded version that returns the four statistics
methods of ``HistoryBuffer`` and nothing else. A malicious file runs nothing; it fails with
``UnpicklingError`` naming the refused global.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from typing import Any

import torch

# (module, name) pairs a mmengine / mmdet / mmseg checkpoint may reference, besides tensor storages
# (handled by torch before find_class).
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "dtype"),
    ("torch", "float32"),
    ("torch", "float16"),
    ("torch", "bfloat16"),
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("mmengine.logging.history_buffer", "HistoryBuffer"),
}
SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float",
                 "bool", "complex", "slice", "range"}
HISTORY_BUFFER_METHODS = {"min", "max", "current", "mean"}


def _guarded_getattr(obj: Any, name: str) -> Any:
    from mmengine.logging.history_buffer import HistoryBuffer

    if obj is HistoryBuffer and name in HISTORY_BUFFER_METHODS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(f"getattr({getattr(obj, '__name__', type(obj).__name__)}, {name!r}) is not allowed")


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that finds only :data:`ALLOWED_GLOBALS`, safe builtins and a guarded getattr."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__"):
            if name in SAFE_BUILTINS:
                return super().find_class("builtins", name)
            if name == "getattr":
                return _guarded_getattr
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a checkpoint")


class _RestrictedPickleModule:
    """What ``torch.load(pickle_module=...)`` needs: ``Unpickler`` and ``load``."""

    Unpickler = Unpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return Unpickler(file, **kwargs).load()


def load_checkpoint_file(filename: str, map_location: Any = None) -> Any:
    """``torch.load`` of an mmengine checkpoint through the restricted unpickler."""
    return torch.load(filename, map_location=map_location, weights_only=False,
                      pickle_module=_RestrictedPickleModule)  # type: ignore[arg-type]


@contextlib.contextmanager
def restricted_local_loader() -> Iterator[None]:
    """Within the block, mmengine loads local checkpoint files with :func:`load_checkpoint_file`."""
    from mmengine.runner.checkpoint import CheckpointLoader

    previous = CheckpointLoader._get_checkpoint_loader("/")  # mmengine's local-file loader
    CheckpointLoader.register_scheme(prefixes="", loader=load_checkpoint_file, force=True)
    try:
        yield
    finally:
        CheckpointLoader.register_scheme(prefixes="", loader=previous, force=True)
