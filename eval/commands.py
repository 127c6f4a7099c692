"""Built-in commands that produce no record: ``inspect`` and ``extract``."""

from __future__ import annotations

import argparse
import logging

import numpy as np

from . import distributed as dist
from .atomic import atomic_save
from .checkpoint import load_backbone
from .context import RunContext
from .datasets import classification_split, index_image_folder, index_images
from .errors import BadInput
from .features import LAYER_SETS
from .options import add_common_arguments
from .transforms import add_transform_arguments, transform_from_args

log = logging.getLogger(__name__)


def add_inspect_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="load a checkpoint and print what was found",
                       description="Load a checkpoint strictly (any supported format) and print the detected "
                                   "format, key, architecture, parameter count, sha256 and what was ignored.")
    p.add_argument("--ckpt", required=True, metavar="PATH", help="checkpoint file, or random:ARCH")
    p.add_argument("--checkpoint-key", default=None, metavar="KEY",
                   help="network inside a pre-training checkpoint (default: teacher)")
    p.add_argument("--arch", default=None, help="architecture override (default: inferred from the tensors)")
    p.add_argument("--patch-size", type=int, default=None, help="patch size for short --arch names (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of random:ARCH backbones (default: 0)")
    p.set_defaults(func=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    bb = load_backbone(args.ckpt, checkpoint_key=args.checkpoint_key, arch=args.arch,
                       patch_size=args.patch_size, seed=args.seed)
    print("\n".join(bb.info.summary_lines()))
    return 0


def add_extract_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="extract features of a dataset or an image folder into features.npz",
                       description="Write RUN_DIR/features.npz: `features` [N, D] float32 (for --layers patch: "
                                   "[N, P, D]), `paths` [N] (relative to the input folder, sorted) and `labels` [N] "
                                   "(class indices for --data/--dataset, zeros for --images).")
    add_common_arguments(p)
    # --images is an alternative to --data/--dataset
    p.add_argument("--images", default=None, metavar="DIR", help="a folder of images (recursive) instead of a dataset")
    p.add_argument("--split", default=None, help="split of a --data/--dataset folder (default: the test split)")
    p.add_argument("--layers", choices=LAYER_SETS, default="cls", help="layer set (default: cls)")
    add_transform_arguments(p)
    p.set_defaults(func=run_extract)


def run_extract(args: argparse.Namespace) -> int:
    if sum(x is not None for x in (args.images, args.data, args.dataset)) != 1:
        raise BadInput(None, "give exactly one of --images DIR, --data DIR, --dataset NAME")
    ctx = RunContext(args)
    if args.images is not None:
        index = index_images(args.images)
    else:
        folder, _split = classification_split(args.dataset, args.data, args.split, "test")
        index = index_image_folder(folder)
    fs = ctx.features(index, transform_from_args(args), args.layers)
    if not dist.is_main():  # under torchrun every rank holds the gathered features; rank 0 writes them
        return 0
    out = ctx.file_in_out("features.npz")
    atomic_save(out, lambda fh: np.savez(fh, features=fs.features, paths=fs.paths, labels=fs.labels))
    print(f"{out}: {fs.features.shape[0]} images, features {list(fs.features.shape[1:])}")
    return 0
