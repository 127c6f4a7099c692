"""Options shared by every ``attmask-eval`` task, defined once and composed into each parser."""

from __future__ import annotations

import argparse
import os


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The design's common options of backbone tasks."""
    g = parser.add_argument_group("backbone")
    g.add_argument("--ckpt", required=True, metavar="PATH",
                   help="checkpoint in any supported format, or random:ARCH for an explicitly "
                        "random-initialised baseline (e.g. random:vit_small)")
    g.add_argument("--checkpoint-key", default=None, metavar="KEY",
                   help="network inside a pre-training checkpoint (default: teacher)")
    g.add_argument("--arch", default=None, metavar="NAME",
                   help="architecture override: vit_tiny|small|base|large (+ --patch-size), a timm vit_* "
                        "name or vit_d<dim>_l<depth>_h<heads>_patch<p>_<size> (default: inferred from the tensors)")
    g.add_argument("--patch-size", type=int, default=None, metavar="P",
                   help="patch size for short --arch names (default: 16, or the checkpoint's)")
    g = parser.add_argument_group("data")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--data", default=None, metavar="DIR", help="dataset folder in its official layout")
    src.add_argument("--dataset", default=None, metavar="NAME",
                     help="registered dataset name, resolved under $ATTMASK_DATA (configs/datasets.yaml)")
    g.add_argument("--dataset-name", default=None, metavar="NAME",
                   help="label of a --data run in the record (default: the folder's name)")
    g = parser.add_argument_group("run")
    g.add_argument("--out", required=True, metavar="RUN_DIR", help="output folder (created; records land here)")
    g.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    g.add_argument("--batch-size", type=int, default=128, help="images per forward pass (default: 128)")
    g.add_argument("--num-workers", type=int, default=None,
                   help="data-loading workers (default: min(8, CPU count))")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    g.add_argument("--no-cache", action="store_true", help="recompute features instead of using the feature cache")
    g.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="feature cache folder (default: $ATTMASK_CACHE or ~/.cache/attmask/features)")


def add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of scoring commands (they score existing outputs; no backbone)."""
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="output folder for the record")
    parser.add_argument("--dataset-name", default=None, metavar="NAME",
                        help="dataset label in the record (default: derived from the inputs)")


def add_task_arguments(parser: argparse.ArgumentParser, task: object) -> None:
    """Everything a task's command line takes: the shared options of its kind, then its own."""
    if getattr(task, "uses_backbone", True):
        add_common_arguments(parser)
    else:
        add_scoring_arguments(parser)
    task.add_arguments(parser)  # type: ignore[attr-defined]
