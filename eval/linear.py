"""``attmask-eval linear``: the linear probe, reference-faithful (``--mode reference``) or fast (default).

- ``reference``: DINO's ``eval_linear.py`` as the AttMask README runs it (``linear_reference.py``):
  augmented images through the frozen backbone every epoch, 100 epochs, best epoch on the test
  split (``selection: test``). Days of GPU time on ImageNet; the numbers papers report.
- ``fast``: DINOv2-style sweep on cached features (``linear_heads.py``): one ``cls4+avgpool``
  extraction; heads for every (feature set × learning rate × weight decay) trained together on
  90% of the training split; the best on the held-out 10% (``selection: heldout``) refit on the
  whole training split and evaluated once on the test split. Minutes; never ``reference``.

Metrics: ``top1`` and ``top5`` (percent; ``top5`` only with >= 5 classes). The fast mode writes the
whole sweep (held-out accuracy of every head, the chosen one) to ``<record name>.sweep.json``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import distributed as dist
from . import records
from .atomic import atomic_write_json
from .classification_options import add_classification_arguments, plan_classification, resolve_classification
from .context import RunContext
from .errors import BadInput
from .features import default_linear_layers
from .linear_heads import FEATURE_SETS, HeadConfig, evaluate_heads, feature_views, train_heads
from .linear_reference import (
    REFERENCE_BASE_LR,
    REFERENCE_EPOCHS,
    REFERENCE_TRAIN_BATCH,
    ReferenceSettings,
    TrainTransform,
    train_reference_probe,
)
from .tasks import Plan, Task, TaskResult

log = logging.getLogger(__name__)

# DINOv2's learning-rate grid (``dinov2/eval/linear.py``), scaled by total batch / 256.
FAST_LRS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)
# DINOv2's feature sets: last 1 or 4 CLS tokens, with or without the mean patch token.
FAST_FEATURE_SETS = ("cls", "cls4", "cls+avgpool", "cls4+avgpool")
FAST_WEIGHT_DECAYS = (0.0, 1e-4)
FAST_ITERATIONS = 12_500  # DINOv2: 10 "epochs" of 1,250 iterations
FAST_TRAIN_BATCH = 1024  # DINOv2: 128 per GPU x 8
HELDOUT_FRACTION = 0.1


# -- the fast protocol, pure over arrays -------------------------------------------------------

def heldout_split(labels: np.ndarray, fraction: float, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-class random split of positions: (fit [N - M], held-out [M]); each class with >= 2 images
    gives ``max(1, round(fraction * n_c))`` held-out images. Both sorted."""
    fit, held = [], []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        perm = pos[torch.randperm(len(pos), generator=generator).numpy()]
        m = max(1, round(fraction * len(pos))) if len(pos) >= 2 else 0
        held.append(perm[:m])
        fit.append(perm[m:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))


def sweep_configs(feature_sets: Sequence[str], lrs: Sequence[float], weight_decays: Sequence[float],
                  lr_scale: float) -> list[HeadConfig]:
    """The grid, feature set outermost; learning rates multiplied by ``lr_scale`` (batch / 256)."""
    return [HeadConfig(f, lr * lr_scale, wd) for f in feature_sets for lr in lrs for wd in weight_decays]


@dataclass
class FastProbeResult:
    metrics: dict[str, float]
    chosen: HeadConfig
    sweep: list[dict[str, Any]]  # every head: config + held-out top-1


def fast_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                      embed_dim: int, configs: Sequence[HeadConfig], num_classes: int, iterations: int,
                      batch_size: int, heldout_fraction: float, seed: int,
                      device: torch.device | str = "cpu", progress: bool = False) -> FastProbeResult:
    """Sweep on 90% / select on the held-out 10% / refit on 100% / evaluate once on the test split.

    ``train_x`` [N, 5D] and ``test_x`` [Q, 5D] are ``cls4+avgpool`` features; labels [N] / [Q].
    Returns ``top1`` / ``top5`` (percent; top5 with >= 5 classes) of the refit head.
    """
    views = feature_views(embed_dim)
    gen = torch.Generator().manual_seed(seed)
    fit, held = heldout_split(train_y.numpy(), heldout_fraction, gen)
    if len(held) == 0:
        raise ValueError("no held-out images: every class needs at least 2 training images")
    fit_t, held_t = torch.from_numpy(fit), torch.from_numpy(held)
    bank = train_heads(train_x, train_y, configs, views, num_classes=num_classes, iterations=iterations,
                       batch_size=batch_size, generator=gen, device=device, rows=fit_t, progress=progress)
    held_top1 = evaluate_heads(bank, train_x, train_y, topk=(1,), device=device, rows=held_t)[1]
    best = int(torch.argmax(held_top1))  # first of equals: grid order
    chosen = configs[best]
    log.info("linear sweep: %d heads; best on held-out %.2f: %s", len(configs), float(held_top1[best]), chosen)
    final = train_heads(train_x, train_y, [chosen], views, num_classes=num_classes, iterations=iterations,
                        batch_size=batch_size, generator=torch.Generator().manual_seed(seed + 1), device=device,
                        progress=progress)
    acc = evaluate_heads(final, test_x, test_y, topk=(1, 5), device=device)
    metrics = {"top1": float(acc[1][0])}
    if num_classes >= 5:
        metrics["top5"] = float(acc[5][0])
    sweep = [{**c.to_dict(), "heldout_top1": float(a)} for c, a in zip(configs, held_top1)]
    return FastProbeResult(metrics=metrics, chosen=chosen, sweep=sweep)


# -- task ----------------------------------------------------------------------------------------

class LinearTask(Task):
    name = "linear"
    help = "linear probe on the frozen backbone (fast sweep, or the reference protocol)"
    description = ("Linear probe. --mode fast (default): heads for every feature set x lr x weight decay trained "
                   "together on cached features, chosen on a held-out 10% of train, refit, evaluated once "
                   "(selection: heldout; never reference). --mode reference: DINO's eval_linear as the AttMask "
                   "README runs it (RandomResizedCrop + flip through the frozen backbone, SGD momentum 0.9, no "
                   "weight decay, cosine, 100 epochs, lr 0.005 x batch / 256 at batch 2048, best epoch on the "
                   "test split: selection: test); resumable. Metrics top1, top5 (percent).")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_classification_arguments(parser)
        g = parser.add_argument_group("linear probe")
        g.add_argument("--mode", choices=("fast", "reference"), default="fast",
                       help="fast sweep on cached features, or the reference protocol (default: fast)")
        g.add_argument("--train-batch-size", type=int, default=None, metavar="N",
                       help=f"images per SGD step over all processes (default: reference {REFERENCE_TRAIN_BATCH}, "
                            f"fast {FAST_TRAIN_BATCH}); learning rates scale by N / 256")
        g = parser.add_argument_group("reference mode")
        g.add_argument("--layers", choices=FEATURE_SETS, default=None,
                       help="feature layer set (default: cls4 for embed dim <= 384, cls+avgpool above)")
        g.add_argument("--epochs", type=int, default=REFERENCE_EPOCHS, help="epochs (default: 100)")
        g.add_argument("--lr", type=float, default=REFERENCE_BASE_LR,
                       help="base learning rate, times total batch / 256 (default: 0.005)")
        g.add_argument("--eval-freq", type=int, default=1, help="evaluate every N epochs (default: 1)")
        g = parser.add_argument_group("fast mode")
        g.add_argument("--iterations", type=int, default=FAST_ITERATIONS,
                       help=f"SGD iterations of every head (default: {FAST_ITERATIONS}, DINOv2's)")
        g.add_argument("--lrs", type=float, nargs="+", default=list(FAST_LRS), metavar="LR",
                       help="base learning-rate grid, times batch / 256 (default: DINOv2's 13 values 1e-5..0.1)")
        g.add_argument("--feature-sets", nargs="+", choices=FEATURE_SETS, default=list(FAST_FEATURE_SETS),
                       metavar="SET", help="feature sets of the grid (default: cls cls4 cls+avgpool cls4+avgpool)")
        g.add_argument("--weight-decays", type=float, nargs="+", default=list(FAST_WEIGHT_DECAYS), metavar="WD",
                       help="weight-decay grid (default: 0 1e-4)")
        g.add_argument("--heldout-fraction", type=float, default=HELDOUT_FRACTION,
                       help="fraction of each class held out for selection (default: 0.1)")

    def plan(self, args: argparse.Namespace, ctx: RunContext) -> Plan:
        base = plan_classification(args, ctx)
        if args.mode == "reference":
            protocol = self._reference_protocol(args, ctx, base.reference)
        else:
            protocol = self._fast_protocol(args)
        return Plan(dataset=base.dataset, split=base.test_split, protocol={**base.protocol, **protocol})

    @staticmethod
    def _reference_protocol(args: argparse.Namespace, ctx: RunContext, data_reference: bool) -> dict[str, Any]:
        rule = default_linear_layers(ctx.backbone().info.arch.embed_dim)
        layers = args.layers or rule
        batch = args.train_batch_size or REFERENCE_TRAIN_BATCH
        for flag, value in (("--epochs", args.epochs), ("--train-batch-size", batch), ("--eval-freq", args.eval_freq)):
            if value < 1:
                raise BadInput(None, f"{flag} must be at least 1 (got {value})")
        crop = args.crop
        train_tf = TrainTransform(crop=crop)
        reference = (data_reference and layers == rule and args.epochs == REFERENCE_EPOCHS
                     and args.lr == REFERENCE_BASE_LR and batch == REFERENCE_TRAIN_BATCH and args.eval_freq == 1)
        return {"mode": "reference", "layers": layers, "epochs": args.epochs, "base_lr": args.lr,
                "train_batch_size": batch, "lr": args.lr * batch / 256.0, "optimizer": "sgd", "momentum": 0.9,
                "weight_decay": 0.0, "schedule": "cosine", "train_transform": train_tf.to_dict(),
                "eval_freq": args.eval_freq, "selection": "test", "seed": args.seed, "reference": reference}

    @staticmethod
    def _fast_protocol(args: argparse.Namespace) -> dict[str, Any]:
        batch = args.train_batch_size or FAST_TRAIN_BATCH
        if args.iterations < 1 or batch < 1:
            raise BadInput(None, "--iterations and --train-batch-size must be at least 1")
        if not 0.0 < args.heldout_fraction < 1.0:
            raise BadInput(None, f"--heldout-fraction must be in (0, 1) (got {args.heldout_fraction})")
        return {"mode": "fast", "layers": "cls4+avgpool", "feature_sets": list(dict.fromkeys(args.feature_sets)),
                "lrs": sorted(set(args.lrs)), "lr_scale": batch / 256.0,
                "weight_decays": sorted(set(args.weight_decays)), "iterations": args.iterations,
                "train_batch_size": batch, "optimizer": "sgd", "momentum": 0.9, "schedule": "cosine",
                "heldout_fraction": args.heldout_fraction, "selection": "heldout", "seed": args.seed,
                "reference": False}

    def run(self, args: argparse.Namespace, ctx: RunContext, plan: Plan) -> TaskResult:
        data = resolve_classification(args, ctx)
        p = plan.protocol
        if p["mode"] == "reference":
            settings = ReferenceSettings(layers=p["layers"], epochs=p["epochs"], base_lr=p["base_lr"],
                                         train_batch_size=p["train_batch_size"], eval_freq=p["eval_freq"],
                                         seed=p["seed"])
            result = train_reference_probe(ctx, data.train, data.test, data.transform,
                                           TrainTransform(**{**p["train_transform"],
                                                             "mean": tuple(p["train_transform"]["mean"]),
                                                             "std": tuple(p["train_transform"]["std"])}),
                                           settings, task=self.name, dataset=plan.dataset, protocol=p,
                                           micro_batch=args.batch_size)
            metrics = {"top1": result["top1"]}
            if data.num_classes >= 5:
                metrics["top5"] = result["top5"]
            log.info("linear (reference): best epoch %d of %d", result["best_epoch"], p["epochs"])
            return TaskResult(metrics=metrics, images=ctx.images_seen)
        train = ctx.features(data.train, data.transform, "cls4+avgpool")
        test = ctx.features(data.test, data.transform, "cls4+avgpool")
        embed_dim = ctx.backbone().info.arch.embed_dim
        configs = sweep_configs(p["feature_sets"], p["lrs"], p["weight_decays"], p["lr_scale"])
        try:
            result = fast_linear_probe(
                torch.from_numpy(train.features), torch.from_numpy(train.labels), torch.from_numpy(test.features),
                torch.from_numpy(test.labels), embed_dim=embed_dim, configs=configs, num_classes=data.num_classes,
                iterations=p["iterations"], batch_size=p["train_batch_size"], heldout_fraction=p["heldout_fraction"],
                seed=p["seed"], device=ctx.device, progress=True)
        except ValueError as exc:
            raise BadInput(data.train.root, str(exc)) from None
        name = records.record_stem(self.name, plan.dataset, p)
        sweep_name = f"{name}.sweep.json"
        if dist.is_main():
            atomic_write_json(ctx.file_in_out(sweep_name), {"chosen": result.chosen.to_dict(),
                                                            "heads": result.sweep, "test": result.metrics})
        return TaskResult(metrics=result.metrics, images=len(data.train) + len(data.test),
                          artifacts={"sweep": sweep_name})


TASK = LinearTask()
