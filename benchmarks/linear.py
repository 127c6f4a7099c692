"""Cost of the fast linear-probe sweep (many heads in one pass) vs a single head.

Two views, printed side by side, each against the one-head baseline of the same run:

1. ``heads only``: ``attmask.eval.linear_heads.train_heads`` on synthetic ``cls4+avgpool``
   features [N, 5D] with H heads (the default grid: 13 learning rates x 4 feature sets x 2
   weight decays = 104) vs 1 head, same iterations and batches;
2. ``protocol``: the whole fast probe, i.e. one backbone extraction of the N training images
   (measured on real images through a random-init backbone, per image, and scaled to N) plus
   the head training, for H heads vs 1.

Goal: <= 1.5x for >= 50 heads. Defaults are ViT-S/16 shapes at CIFAR-100 scale (D = 384, C = 100,
N = 10,000, 10 epochs of batch 1,024, DINOv2's schedule length); ``--classes 1000`` gives
ImageNet's head width.

    .venv/bin/python benchmarks/linear.py [--classes 100 --samples 10000 --epochs 10] [--device cuda]
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
    from attmask.eval.features import extract_features
    from attmask.eval.linear import FAST_FEATURE_SETS, FAST_LRS, FAST_WEIGHT_DECAYS, sweep_configs
    from attmask.eval.linear_heads import feature_views, train_heads
    from attmask.eval.transforms import EvalTransform

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--embed-dim", type=int, default=384)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--epochs", type=float, default=10.0, help="passes over the samples (default: 10)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--heads", type=int, nargs="+", default=[8, 26, 52, 104],
                   help="sweep sizes to time (prefixes of the default grid; default: 8 26 52 104)")
    p.add_argument("--arch", default="vit_small", help="backbone whose extraction cost is measured")
    p.add_argument("--patch-size", type=int, default=16)
    default_images = Path(os.environ.get("ATTMASK_DATA", "../shared/data")) / "hymenoptera" / "val"
    p.add_argument("--images", default=str(default_images))
    p.add_argument("--extract-limit", type=int, default=32, help="images per class timed for extraction")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    iterations = max(1, round(args.epochs * args.samples / args.batch_size))

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.samples, 5 * args.embed_dim, generator=gen)
    y = torch.randint(0, args.classes, (args.samples,), generator=gen)
    grid = sweep_configs(FAST_FEATURE_SETS, FAST_LRS, FAST_WEIGHT_DECAYS, args.batch_size / 256)
    # interleave the grid so every prefix covers all feature sets (their widths differ)
    grid = [c for i in range(len(grid) // len(FAST_FEATURE_SETS)) for c in grid[i::len(grid) // len(FAST_FEATURE_SETS)]]
    views = feature_views(args.embed_dim)

    def time_heads(h: int) -> float:
        configs = grid[:h] if h > 1 else [next(c for c in grid if c.feature_set == "cls4")]
        train_heads(x, y, configs, views, num_classes=args.classes, iterations=2, batch_size=args.batch_size,
                    generator=torch.Generator().manual_seed(1), device=device)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_heads(x, y, configs, views, num_classes=args.classes, iterations=iterations,
                    batch_size=args.batch_size, generator=torch.Generator().manual_seed(1), device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    model = load_backbone(f"random:{args.arch}", patch_size=args.patch_size, seed=0).model
    index = index_image_folder(args.images, subset=args.extract_limit)
    tf = EvalTransform()
    extract_features(model, index_image_folder(args.images, subset=2), tf, "cls4+avgpool", device,
                     batch_size=64, num_workers=0, progress=False)  # warm-up
    t0 = time.perf_counter()
    extract_features(model, index, tf, "cls4+avgpool", device, batch_size=64,
                     num_workers=min(8, os.cpu_count() or 1), progress=False)
    extract_s = (time.perf_counter() - t0) / len(index) * args.samples

    one = time_heads(1)
    print(f"linear sweep: N {args.samples}, features {5 * args.embed_dim}-d, {args.classes} classes, {iterations} "
          f"iterations of {args.batch_size} ({args.epochs:g} epochs), device {device}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"extraction of the N images ({args.arch}/{args.patch_size}, 224 px, measured on {len(index)} real "
          f"images and scaled): {extract_s:.1f} s")
    print(f"{'heads':>6} {'heads s':>9} {'heads only':>11} {'protocol s':>11} {'protocol':>9}")
    print(f"{1:>6} {one:9.2f} {1.0:10.2f}x {extract_s + one:11.1f} {1.0:8.2f}x")
    for h in args.heads:
        t = time_heads(h)
        print(f"{h:>6} {t:9.2f} {t / one:10.2f}x {extract_s + t:11.1f} {(extract_s + t) / (extract_s + one):8.2f}x")
    print("goal: protocol ratio <= 1.5x for >= 50 heads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
