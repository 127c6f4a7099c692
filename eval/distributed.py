"""torch.distributed helpers for runs under ``torchrun`` (no-ops in a single process)."""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as td


def is_dist() -> bool:
    return td.is_available() and td.is_initialized()


def rank() -> int:
    return td.get_rank() if is_dist() else 0


def world_size() -> int:
    return td.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: str | None = None) -> torch.device:
    """Initialise the process group from torchrun's environment (nccl on GPU, gloo on CPU).

    Returns the device this rank should use. In a single process nothing is initialised.
    """
    want_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if not launched_by_torchrun():
        return torch.device(device or ("cuda" if want_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not is_dist():
        backend = "nccl" if want_cuda else "gloo"
        if want_cuda:
            torch.cuda.set_device(local_rank)
        td.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    silence_non_main_logging()
    return torch.device(f"cuda:{local_rank}") if want_cuda else torch.device("cpu")


def shutdown() -> None:
    """Destroy the process group, if one was initialised. Leaving a gloo group to interpreter
    teardown sometimes aborted a rank at exit ("terminate called without an active exception")."""
    if is_dist():
        td.destroy_process_group()


def silence_non_main_logging() -> None:
    """Rank-0 filtered logging: other ranks only report warnings and errors."""
    if not is_main():
        logging.getLogger().setLevel(logging.WARNING)


def barrier() -> None:
    if is_dist():
        td.barrier()


def gather_in_order(local: torch.Tensor, positions: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather per-rank rows and put them back in global order (``positions`` = row indices)."""
    objs: list[tuple[torch.Tensor, torch.Tensor]] = [None] * world_size()  # type: ignore[list-item]
    td.all_gather_object(objs, (local, positions))
    feats = torch.cat([o[0] for o in objs if o[0].numel() or o[0].ndim > 1])
    pos = torch.cat([o[1] for o in objs])
    out = torch.empty((total, *feats.shape[1:]), dtype=feats.dtype)
    out[pos] = feats
    order = torch.arange(total)
    return out, order


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if is_dist():
        td.all_reduce(t)
        t /= world_size()
    return t
