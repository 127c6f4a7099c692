"""Feature extraction throughput vs the bare model forward on the same in-memory batches.

Three measurements on the same images, same model, same batch size, in one run:

1. ``bare``: ``model.forward_features`` on batches already decoded, transformed and held in memory
   (the compute floor: what the model alone costs);
2. ``layers``: ``attmask.eval.features.forward_layers`` (reference intermediate layers, each through
   the final norm) on the same in-memory batches (what our feature path adds);
3. ``extract``: ``attmask.eval.features.extract_features`` end to end from the image files (decoding,
   resizing, the DataLoader workers, ordering, conversion to float32 numpy).

Goal: ``extract`` at >= 90% of ``bare`` images/s. On GPU the data pipeline runs beside the model;
on a 2-core CPU the workers and the model share the cores, which the ratio shows.

    .venv/bin/python benchmarks/features.py [--images DIR] [--arch vit_small --patch-size 16] [--crop 224]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch


def main() -> int:
    from attmask.eval.checkpoint import load_backbone
    from attmask.eval.datasets import index_image_folder
    from attmask.eval.features import ImageListDataset, autocast_for, extract_features, forward_layers
    from attmask.eval.transforms import EvalTransform

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_images = Path(os.environ.get("ATTMASK_DATA", "../shared/data")) / "hymenoptera" / "val"
    p.add_argument("--images", default=str(default_images), help="an ImageFolder split (default: hymenoptera/val)")
    p.add_argument("--arch", default="vit_small", help="architecture of the random-init backbone (default: vit_small)")
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--resize", type=int, default=256)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--layers", default="cls")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--limit", type=int, default=None, help="first N images per class only")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=2, help="timed repetitions; the best counts (default: 2)")
    args = p.parse_args()

    device = torch.device(args.device)
    model = load_backbone(f"random:{args.arch}", patch_size=args.patch_size, seed=0).model.to(device).eval()
    index = index_image_folder(args.images, subset=args.limit)
    tf = EvalTransform(resize=args.resize, crop=args.crop)
    ds = ImageListDataset(index, tf)
    batches = [torch.stack([ds[i][0] for i in range(s, min(s + args.batch_size, len(ds)))])
               for s in range(0, len(ds), args.batch_size)]
    n = len(index)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def in_memory(fn) -> float:
        best = float("inf")
        with torch.inference_mode(), autocast_for(device):
            fn(batches[0].to(device))  # warm-up
            for _ in range(args.repeats):
                sync()
                t0 = time.perf_counter()
                for b in batches:
                    fn(b.to(device, non_blocking=True)).float().cpu()
                sync()
                best = min(best, time.perf_counter() - t0)
        return n / best

    bare = in_memory(lambda x: model.forward_features(x))
    layers = in_memory(lambda x: forward_layers(model, x, args.layers))
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        extract_features(model, index, tf, args.layers, device, batch_size=args.batch_size,
                         num_workers=args.num_workers, progress=False)
        best = min(best, time.perf_counter() - t0)
    extract = n / best
    print(f"features: {n} images from {args.images}, {args.arch}/{args.patch_size} at {args.crop} px, layers "
          f"{args.layers}, batch {args.batch_size}, {args.num_workers} workers, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'path':<10} {'images/s':>10} {'vs bare':>8}")
    for name, rate in (("bare", bare), ("layers", layers), ("extract", extract)):
        print(f"{name:<10} {rate:10.1f} {rate / bare:7.1%}")
    print(f"goal extract >= 90% of bare: {'met' if extract >= 0.9 * bare else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
