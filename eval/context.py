"""Per-run context handed to tasks: device, output folder, lazy backbone, cached features."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import torch

from . import distributed as dist
from .cache import FeatureCache
from .checkpoint import LoadedBackbone, load_backbone
from .datasets import ImageIndex
from .errors import BadInput
from .features import FeatureSet, extract_features
from .options import default_workers
from .transforms import EvalTransform

log = logging.getLogger(__name__)


class RunContext:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        if self.out.exists() and not self.out.is_dir():
            raise BadInput(self.out, "--out must be a folder, and this is a file")
        self.device = dist.init_from_env(getattr(args, "device", None))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BadInput(None, f"--device {args.device}: no CUDA device is available")
        self.num_workers = getattr(args, "num_workers", None)
        if self.num_workers is None:
            self.num_workers = default_workers()
        no_cache = getattr(args, "no_cache", False)
        self.cache = None if no_cache else FeatureCache(getattr(args, "cache_dir", None))
        self._backbone: LoadedBackbone | None = None
        self.images_seen = 0

    # -- backbone -----------------------------------------------------------------------------
    def backbone(self) -> LoadedBackbone:
        if self._backbone is None:
            a = self.args
            self._backbone = load_backbone(a.ckpt, checkpoint_key=a.checkpoint_key, arch=a.arch,
                                           patch_size=a.patch_size, seed=a.seed)
        return self._backbone

    # -- datasets -----------------------------------------------------------------------------
    def dataset_label(self) -> str:
        """The record's ``dataset``: the registry name, or ``--dataset-name``, or the folder's name."""
        a = self.args
        if a.dataset is not None:
            return a.dataset
        if a.data is None:
            raise BadInput(None, "give --dataset NAME or --data DIR")
        return a.dataset_name or Path(a.data).resolve().name

    # -- features -----------------------------------------------------------------------------
    def features(self, index: ImageIndex, transform: EvalTransform, layers: str) -> FeatureSet:
        """Features of ``index`` through the cache (computed once per checkpoint × data × transform × layers)."""
        bb = self.backbone()
        fields: dict[str, Any] = {
            "checkpoint": bb.info.sha256, "key": bb.info.key, "arch": bb.info.arch.to_dict(),
            "data": index.fingerprint(), "transform": transform.to_dict(), "layers": layers,
        }

        def compute() -> FeatureSet:
            return extract_features(bb.model, index, transform, layers, self.device,
                                    batch_size=self.args.batch_size, num_workers=self.num_workers)

        self.images_seen += len(index)
        if self.cache is None:
            return compute()
        fs, _hit = self.cache.get_or_compute(fields, compute, write=dist.is_main())
        return fs

    def checkpoint_record(self) -> dict[str, Any] | None:
        return self._backbone.info.record() if self._backbone is not None else None

    def file_in_out(self, name: str) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / name


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    except (ImportError, OSError):
        return 0.0


def cpu_count() -> int:
    return os.cpu_count() or 1
