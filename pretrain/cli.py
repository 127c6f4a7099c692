"""``attmask-pretrain``: ``train``, ``export``, ``visualize``, ``curves``.

``attmask-pretrain train --config PRESET|PATH --out RUN_DIR [--epochs N] [--max-steps N] [--resume]
[key=value ...]`` (../shared/DESIGN.md, "Interfaces"). Under ``torchrun`` every process runs the same
command. Exit status: 0 success, 1 the run failed (a non-finite loss), 2 bad input (one stderr line
naming the file and the problem).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import logging
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from attmask.eval.cli import OneLineParser, dispatch
from attmask.eval.errors import BadInput, TaskFailed
from attmask.eval.resources import available

from .config import PRESET_KIND, PretrainConfig, load_config, parse_overrides

log = logging.getLogger("attmask")


def _train(args: argparse.Namespace) -> int:
    from .trainer import Trainer, TrainingDiverged

    overrides = parse_overrides(args.overrides)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    loaded = load_config(args.config, overrides)
    try:
        summary = Trainer(loaded, args.out, resume=args.resume, max_steps=args.max_steps,
                          progress=not args.no_progress, device=args.device).run()
    except TrainingDiverged as exc:
        raise TaskFailed(str(exc)) from None
    from attmask.eval import distributed as dist

    if dist.is_main():
        loss = summary.last_epoch_stats.get("loss")
        state = "complete" if summary.complete else f"stopped at step {summary.step}"
        print(f"pre-training {state}: epoch {summary.epoch}/{loaded.config.epochs}"
              + (f", loss {loss:.4f}" if loss is not None else ""))
        if summary.knn:
            print("teacher k-NN: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.knn.items()))
        print(f"checkpoint: {summary.checkpoint}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .checkpoints import export_backbone

    out = Path(args.out)
    if out.suffix not in (".pth", ".pt"):
        raise BadInput(out, "--out is the backbone file to write and must end in .pth or .pt")
    path = export_backbone(args.ckpt, out, args.checkpoint_key)
    print(f"backbone ({args.checkpoint_key}): {path}")
    return 0


def _visualize(args: argparse.Namespace) -> int:
    from .visualize import visualize

    paths = visualize(args.ckpt, args.images, args.out, checkpoint_key=args.checkpoint_key, img_size=args.img_size,
                      ratio=args.ratio, show_max=args.show_max, seed=args.seed, limit=args.limit)
    print(f"{len(paths)} figure(s) in {args.out}")
    return 0


def _curves(args: argparse.Namespace) -> int:
    from .curves import load_curve, plot_curves, summary_table

    labels = args.labels or [None] * len(args.runs)
    if len(labels) != len(args.runs):
        raise BadInput(None, f"--labels gives {len(labels)} names for {len(args.runs)} runs")
    curves = [load_curve(r, args.metric, lab) for r, lab in zip(args.runs, labels)]
    out = Path(args.out or args.runs[0])
    path = plot_curves(curves, args.metric, out / "knn_curves.png", baseline=args.baseline)
    print("\n".join(summary_table(curves)))
    print(f"plot: {path}")
    return 0


def _flow(value: object) -> str:
    """A default as it is typed in YAML syntax on the command line (``null``, ``true``, ``[0.25,1.0]``)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list):
        return "[" + ",".join(_flow(v) for v in value) + "]"
    return str(value)


def options_help(width: int = 100) -> str:
    """Every ``KEY=VALUE`` option of ``train`` with its default (the reference value where one exists),
    grouped by the sections of ``PretrainConfig`` and followed by its comment."""
    defaults = {}
    for f in dataclasses.fields(PretrainConfig):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        defaults[f.name] = default
    lines = ["KEY=VALUE options (default: the reference iBOT / AttMask value; a preset sets its own):"]
    try:
        source = inspect.getsource(PretrainConfig).splitlines()
    except (OSError, TypeError):  # no source shipped: names and defaults only
        source = []
    seen = set()
    for raw in source:
        section = re.match(r"\s*# -- (.+?) -+\s*$", raw)
        if section and section.group(1) != "derived":
            lines.append(f"  {section.group(1)}:")
            continue
        field = re.match(r"\s{4}(\w+): [^=]+=[^#]*(?:#\s*(.*))?$", raw)
        if field and field.group(1) in defaults:
            name, note = field.group(1), field.group(2)
            seen.add(name)
            entry = f"    {name}={_flow(defaults[name])}"
            lines.append(textwrap.fill(f"{entry}  ({note})" if note else entry, width=width,
                                       subsequent_indent=" " * 8))
    rest = [f"{n}={_flow(v)}" for n, v in defaults.items() if n not in seen]
    if rest:
        lines.append(textwrap.fill("  ".join(rest), width=width, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="attmask-pretrain", description="Pre-train ViTs with AttMask (High / Low / Hint) "
                           "or baseline masking inside iBOT or DINO, on one CPU, one GPU, or many under torchrun.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)

    presets = ", ".join(available(PRESET_KIND)) or "none"
    p = sub.add_parser("train", help="pre-train a ViT (writes RUN_DIR/checkpoint.pth)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=textwrap.fill(
                           "Pre-train; every run ends by writing RUN_DIR/checkpoint.pth, plus "
                           "RUN_DIR/checkpoint{epoch:04d}.pth every saveckp_freq epochs, and RUN_DIR/config.yaml, "
                           "the resolved configuration (--config RUN_DIR/config.yaml repeats the run). "
                           f"Shipped presets: {presets}.", width=100),
                       epilog=options_help())
    p.add_argument("--config", required=True, metavar="PRESET|PATH", help="a shipped preset name or a YAML file")
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run folder (checkpoints, config.yaml, log.jsonl, tb/)")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs (schedules span them)")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="stop at global iteration N (whichever of epochs / max-steps ends first ends the run)")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR/checkpoint.pth exactly")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="option overrides, values in YAML syntax (e.g. pred_shape=attmask_hint lr=1e-3 "
                        "global_crops_scale=[0.32,1]); the keys are listed below")
    p.set_defaults(func=_train)

    p = sub.add_parser("export", help="write a backbone-only checkpoint ({'state_dict': ...})")
    p.add_argument("--ckpt", required=True, metavar="PATH", help="a pre-training checkpoint")
    p.add_argument("--checkpoint-key", default="teacher", metavar="KEY", help="network to export (default: teacher)")
    p.add_argument("--out", required=True, metavar="FILE", help="the backbone file to write (.pth)")
    p.set_defaults(func=_export)

    p = sub.add_parser("visualize", help="attention map + masks of every strategy, one PNG per image")
    p.add_argument("--ckpt", required=True, metavar="PATH", help="a checkpoint (any format attmask-eval loads)")
    p.add_argument("--checkpoint-key", default=None, metavar="KEY", help="network (default: teacher)")
    p.add_argument("--images", required=True, metavar="DIR", help="a folder of images (recursive)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="folder for the PNGs")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the checkpoint's crop size)")
    p.add_argument("--ratio", type=float, default=0.3, help="masking ratio of every panel (default: 0.3)")
    p.add_argument("--show-max", type=float, default=0.1, help="AttMask-Hint's show_max (default: 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws (default: 0)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (sorted)")
    p.set_defaults(func=_visualize)

    p = sub.add_parser("curves", help="teacher k-NN vs epoch of several runs in one PNG")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (the first is the reference for "
                                                              "'epochs to reach')")
    p.add_argument("--metric", default="top1@k20", help="k-NN metric (default: top1@k20)")
    p.add_argument("--labels", nargs="+", default=None, help="legend names (default: folder names)")
    p.add_argument("--baseline", type=float, default=None, help="draw a random-init value as a line")
    p.add_argument("--out", default=None, metavar="DIR", help="folder for knn_curves.png (default: first RUN_DIR)")
    p.set_defaults(func=_curves)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("attmask-pretrain", build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
