"""On-disk feature cache.

An entry is keyed by sha256 over: checkpoint sha256 + key + architecture, the dataset
fingerprint (file list, sizes, mtimes), the transform, the layer set and the code version (a
hash of the modules that compute features). Any change misses. Entries are ``.npz`` files
written atomically; an entry that fails to load, whose stored key differs, or whose arrays are
inconsistent is reported, deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .atomic import atomic_save
from .features import FeatureSet

log = logging.getLogger(__name__)

CACHE_ENV = "ATTMASK_CACHE"
# Modules whose source defines what a feature is; editing one invalidates the cache.
_FEATURE_MODULES = ("features.py", "checkpoint.py", "arch.py", "transforms.py", "datasets.py")


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "attmask" / "features"


@lru_cache(maxsize=1)
def code_version() -> str:
    h = hashlib.sha256(__version__.encode())
    here = Path(__file__).parent
    for name in _FEATURE_MODULES:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def cache_key(fields: dict[str, Any]) -> str:
    payload = json.dumps({**fields, "code": code_version()}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class FeatureCache:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def load(self, key: str) -> FeatureSet | None:
        path = self.path_for(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                stored = str(z["key"])
                fs = FeatureSet(features=z["features"], labels=z["labels"], paths=z["paths"])
            if stored != key:
                raise ValueError("stored key differs")
            if not (len(fs.features) == len(fs.labels) == len(fs.paths)):
                raise ValueError("array lengths differ")
            if not np.isfinite(fs.features).all():
                raise ValueError("non-finite features")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            log.warning("feature cache entry %s is corrupt (%s): recomputing", path, exc)
            path.unlink(missing_ok=True)
            return None
        log.info("feature cache hit: %s", path)
        return fs

    def save(self, key: str, fs: FeatureSet) -> Path:
        path = self.path_for(key)
        atomic_save(path, lambda fh: np.savez(fh, key=np.asarray(key), features=fs.features,
                                              labels=fs.labels, paths=fs.paths))
        return path

    def get_or_compute(self, fields: dict[str, Any], compute: Callable[[], FeatureSet],
                       write: bool = True) -> tuple[FeatureSet, bool]:
        """Return ``(features, hit)``; on a miss compute, store (when ``write``) and return."""
        key = cache_key(fields)
        hit = self.load(key)
        if hit is not None:
            return hit, True
        fs = compute()
        if write:
            self.save(key, fs)
        return fs, False
