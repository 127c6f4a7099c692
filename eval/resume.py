"""Resumable, reproducible training loops of evaluation tasks (linear reference mode, fine-tuning).

A task run keeps its state in ``RUN_DIR/<task>-<dataset>-<first 8 hex of protocol_hash>.state.pth``,
next to the record it will write, saved atomically after every epoch. The state stores the
protocol hash and the checkpoint's sha256: rerunning the same command continues where the last
run stopped; a state left by another checkpoint is refused (one line, exit 2), never mixed in.
Loading is ``torch.load(weights_only=True)``: the state holds only tensors and plain containers.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed as dist
from . import records
from .atomic import atomic_save
from .errors import BadInput

log = logging.getLogger(__name__)


def state_path(out: Path, task: str, dataset: str, protocol: dict[str, Any]) -> Path:
    return out / (records.record_stem(task, dataset, protocol) + ".state.pth")


def load_state(path: Path, protocol: dict[str, Any], checkpoint_sha256: str) -> dict[str, Any] | None:
    """The saved state of this protocol and checkpoint, or None when there is none."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: say which and stop
        raise BadInput(path, f"cannot read the saved training state ({type(exc).__name__}); "
                             "delete it to start over") from None
    if not isinstance(state, dict) or state.get("protocol_hash") != records.protocol_hash(protocol):
        raise BadInput(path, "the saved training state belongs to another protocol; delete it to start over")
    if state.get("checkpoint_sha256") != checkpoint_sha256:
        raise BadInput(path, "the saved training state belongs to another checkpoint; use another --out "
                             "or delete it")
    log.info("resuming from %s (epoch %d)", path, state["epoch"])
    return state


def save_state(path: Path, state: dict[str, Any], protocol: dict[str, Any], checkpoint_sha256: str) -> None:
    """Atomically write ``state`` (rank 0 only) with the protocol hash and checkpoint sha256."""
    if not dist.is_main():
        return
    full = {**state, "protocol_hash": records.protocol_hash(protocol), "checkpoint_sha256": checkpoint_sha256}
    atomic_save(path, lambda fh: torch.save(full, fh))


@contextlib.contextmanager
def epoch_rng(seed: int, epoch: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed torch (CPU and ``device``), numpy and ``random`` from (seed, epoch, rank) for one epoch.

    Augmentations, drop-path, mixup and data-loader worker seeds of epoch e are then the same
    whether or not the run was resumed before it; the previous generator states are restored.
    """
    devices = [device] if device is not None and device.type == "cuda" else []
    np_state, py_state = np.random.get_state(), random.getstate()
    value = (seed * 1_000_003 + epoch * 1_009 + dist.rank()) % 2**31
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(value)
            np.random.seed(value)
            random.seed(value)
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def micro_batch_size(step: int, limit: int, even: bool = False) -> int:
    """Images per forward pass: the largest divisor of the per-process ``step`` batch that is at most
    ``limit`` (``--batch-size``), and even when ``even`` (mixup pairs images within a batch).

    Loaders then yield whole steps as runs of equal micro-batches, and no loader batch holds more
    than ``limit`` images in memory (the reference steps of 2,048 or 900 images would).
    """
    for size in range(min(step, limit), 0, -1):
        if step % size == 0 and (not even or size % 2 == 0):
            return size
    raise BadInput(None, f"no {'even ' if even else ''}batch size divides the {step} images per process and step "
                         f"(pick another --train-batch-size)")
