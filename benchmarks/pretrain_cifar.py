"""Does our training reproduce the method? Teacher k-NN on cifar10-mini for every masking strategy.

Pre-trains the cifar10-mini benchmark setting (``configs/pretrain/cifar10mini_*.yaml``: ViT 192-d,
4 blocks, patch 4, 2 x 32 px + 6 x 16 px crops, batch 256, 100 epochs, iBOT) once per strategy
(AttMask-High, -Hint, -Low, random, block-wise; same seed, so the same initialisation), evaluating
the teacher's k-NN top1@k20 (2,000 test images, the 10,000 train images as the bank) at
initialisation and every 10 epochs. Prints and writes the table (``OUT/pretrain_cifar.md``,
``OUT/pretrain_cifar.json``) and the curves (``OUT/knn_curves.png``) with the epochs each strategy
needs to reach the random / block baselines' final k-NN (the paper's convergence claim).

For comparison, the reference implementation in this setting goes from about 29 at random init to
about 36 after 30 epochs and about 44 after 100 epochs with random masking
(../shared/reference/CPU-PRETRAINING.md). Sized for a GPU; on 2 CPU cores use the ``cifar10mini_cpu``
presets (``--preset-prefix cifar10mini_cpu``), which train for minutes, not for this comparison.

    .venv/bin/python benchmarks/pretrain_cifar.py --out runs/pretrain_cifar            # GPU, ~5 runs x 100 epochs
    .venv/bin/python benchmarks/pretrain_cifar.py --out runs/pc --jobs 2 --epochs 30   # shorter
    .venv/bin/python benchmarks/pretrain_cifar.py --out /tmp/smoke --preset-prefix cifar10mini_cpu \\
        --max-steps 4 subset=20 batch_size_per_gpu=32 eval_every=1                     # plumbing check

Ablations: ``--variant NAME STRATEGY KEY=VALUE ...`` (repeatable) adds a run ``NAME`` of that strategy
with its own overrides (after the shared ones), e.g. the ablation that traced the first GPU runs' gap
to the reference to the CLS teacher temperature (benchmarks/results/h200-2026-11-27-ablation/):

    .venv/bin/python benchmarks/pretrain_cifar.py --out runs/abl --jobs 3 --variant rand_t07 rand teacher_temp=0.07 \\
        --variant rand_loader rand augment_on=loader --variant rand_m099 rand momentum_teacher=0.99

``--report-only`` rebuilds the report from the runs' logs (the training-state table takes K from each
run's ``config.yaml``, or, for runs without one, from the preset and the overrides given).

Runs resume: a run whose folder holds a finished checkpoint is not trained again, an unfinished one
continues (``--resume``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from attmask.eval.checkpoint import read_checkpoint_file
from attmask.pretrain.config import RUN_CONFIG_NAME, PretrainConfig, load_config, parse_overrides
from attmask.pretrain.curves import Curve, epochs_to_reach, load_curve, plot_curves
from attmask.pretrain.runlog import read_log

STRATEGIES = ("attmask_high", "attmask_hint", "attmask_low", "rand", "block")
REFERENCE_RANDOM = {0: 29.0, 30: 36.0, 100: 44.0}  # reference implementation, random masking (approximate)


def run_state(run: Path) -> str:
    ck = run / "checkpoint.pth"
    if not ck.is_file():
        return "new"
    meta = read_checkpoint_file(ck).get("attmask", {})
    return "done" if meta.get("complete") else "partial"


def plan_runs(args: argparse.Namespace) -> dict[str, tuple[str, list[str]]]:
    """Run name -> (strategy, its own overrides): ``--strategies`` (all five when neither they nor
    ``--variant`` are given) and every ``--variant NAME STRATEGY KEY=VALUE ...``."""
    runs: dict[str, tuple[str, list[str]]] = {}
    strategies = args.strategies if args.strategies is not None else ([] if args.variant else list(STRATEGIES))
    for s in strategies:
        runs[s] = (s, [])
    for spec in args.variant or []:
        if len(spec) < 2 or spec[1] not in STRATEGIES:
            raise SystemExit(f"--variant {' '.join(spec)}: give NAME STRATEGY [KEY=VALUE ...], STRATEGY one of "
                             f"{', '.join(STRATEGIES)}")
        if spec[0] in runs or "/" in spec[0]:
            raise SystemExit(f"--variant {spec[0]}: run names must be unique folder names")
        runs[spec[0]] = (spec[1], list(spec[2:]))
    return runs


def command(name: str, args: argparse.Namespace, run: Path) -> list[str]:
    strategy, extra = args.runs[name]
    cmd = [sys.executable, "-m", "attmask.pretrain.cli", "train", "--config", f"{args.preset_prefix}_{strategy}",
           "--out", str(run), "--no-progress"]
    if args.epochs is not None:
        cmd += ["--epochs", str(args.epochs)]
    if args.max_steps is not None:
        cmd += ["--max-steps", str(args.max_steps)]
    if args.device is not None:
        cmd += ["--device", args.device]
    if run_state(run) == "partial":
        cmd.append("--resume")
    return cmd + list(args.overrides) + extra


def train_all(args: argparse.Namespace, out: Path) -> dict[str, float]:
    """Run the strategies, ``args.jobs`` at a time; returns wall seconds per strategy."""
    pending = [s for s in args.runs if run_state(out / s) != "done" or args.max_steps is not None]
    running: dict[str, tuple[subprocess.Popen, float, object]] = {}
    walls: dict[str, float] = {}
    start, stopped = time.perf_counter(), set()
    while pending or running:
        if args.time_limit is not None and time.perf_counter() - start > args.time_limit:
            if pending:
                print(f"time limit: not started: {', '.join(pending)}", flush=True)
                pending = []
            for s, (proc, _, _) in running.items():
                if proc.poll() is None and s not in stopped:
                    stopped.add(s)
                    print(f"[{time.strftime('%H:%M:%S')}] {s}: time limit ({args.time_limit:.0f} s), stopping "
                          "(its k-NN curve so far is kept; --resume continues it)", flush=True)
                    proc.terminate()
        while pending and len(running) < args.jobs:
            s = pending.pop(0)
            run = out / s
            if args.max_steps is not None and run_state(run) != "new":
                continue  # a plumbing check never re-runs
            run.mkdir(parents=True, exist_ok=True)
            log = open(run / "train.out", "a")  # closed when the process ends
            cmd = command(s, args, run)
            print(f"[{time.strftime('%H:%M:%S')}] {s}: {' '.join(cmd[2:])}", flush=True)
            running[s] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()),
                          time.perf_counter(), log)
        time.sleep(2)
        for s, (proc, t0, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                walls[s] = time.perf_counter() - t0
                del running[s]
                status = "ok" if proc.returncode == 0 else "stopped (time limit)" if s in stopped else f"FAILED (exit {proc.returncode}, see {out / s / 'train.out'})"
                print(f"[{time.strftime('%H:%M:%S')}] {s}: {status} in {walls[s]:.0f} s", flush=True)
    return walls


def table(curves: dict[str, Curve], metric: str, overrides: list[str] | None = None) -> list[str]:
    epochs = sorted({e for c in curves.values() for e in c.epochs})
    header = "| epoch | " + " | ".join(curves) + " | reference (random) |"
    lines = [header, "|" + "---|" * (len(curves) + 2)]
    for e in epochs:
        cells = []
        for c in curves.values():
            v = dict(zip(c.epochs, c.values)).get(e)
            cells.append(f"{v:.2f}" if v is not None else "")
        ref = REFERENCE_RANDOM.get(e)
        lines.append(f"| {e} | " + " | ".join(cells) + f" | {'~' + str(ref) if ref else ''} |")
    lines.append("")
    lines.append(f"Teacher k-NN {metric} (percent) on cifar10-mini test; epoch 0 = the initialisation "
                 "(the same for every strategy: same seed).")
    if overrides:
        lines.append(f"Every run with: {' '.join(overrides)}")
    for base in ("rand", "block"):
        if base in curves:
            target = curves[base].final
            reach = {s: epochs_to_reach(c, target) for s, c in curves.items()}
            lines.append(f"Epochs to reach {base}'s final {target:.2f}: "
                         + ", ".join(f"{s} {r if r is not None else 'never'}" for s, r in reach.items()))
    return lines


def opt(entry: dict, key: str, fmt: str) -> str:
    """``entry[key]`` formatted, or "" for logs written before the key existed."""
    return format(entry[key], fmt) if key in entry else ""


def run_config(out: Path, run: str, args: argparse.Namespace) -> PretrainConfig:
    """What ``run`` trained with: its ``config.yaml``, else (runs from before it existed) the preset and
    the overrides given."""
    saved = out / run / RUN_CONFIG_NAME
    if saved.is_file():
        return load_config(saved).config
    strategy, extra = args.runs[run]
    return load_config(f"{args.preset_prefix}_{strategy}", parse_overrides(list(args.overrides) + extra)).config


def health(out: Path, runs: list[str], args: argparse.Namespace) -> list[str]:
    """Per run, the last epoch's losses and the teacher's CLS distribution against ln K (an entropy
    near ln K with a CLS loss near ln K means the CLS head has collapsed towards uniform outputs; the
    spread of its centred logits, near 0, says the same without the temperature), the entropy of its
    masked-patch targets, and the median training throughput."""
    lines = ["| run | epochs | loss | CLS loss | patch loss | teacher entropy (ln K) | teacher max prob | "
             "teacher spread | teacher patch entropy | images/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in runs:
        entries = read_log(out / s)  # one read per run ([] without a log)
        epochs = [e for e in entries if e.get("kind") == "epoch"]
        if not epochs:
            continue
        last = epochs[-1]
        speeds = sorted(e["images_per_s"] for e in entries if e.get("kind") == "train" and "images_per_s" in e)
        k = run_config(out, s, args).out_dim
        ips = f"{speeds[len(speeds) // 2]:.0f}" if speeds else ""
        lines.append(f"| {s} | {last['epoch']} | {last['loss']:.3f} | {last['cls']:.3f} | {last['patch']:.3f} | "
                     f"{last['teacher_entropy']:.3f} ({math.log(k):.3f}) | {last['teacher_max_prob']:.4f} | "
                     f"{opt(last, 'teacher_spread', '.4f')} | {opt(last, 'teacher_patch_entropy', '.3f')} | {ips} |")
    return lines if len(lines) > 2 else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Teacher k-NN vs epochs on cifar10-mini for every masking strategy.")
    p.add_argument("--out", required=True, help="folder: one run folder per run, plus the report")
    p.add_argument("--strategies", nargs="+", default=None, choices=STRATEGIES,
                   help="runs named after their strategy (default: all five, unless --variant is given)")
    p.add_argument("--variant", nargs="+", action="append", metavar="ARG",
                   help="NAME STRATEGY [KEY=VALUE ...]: an extra run NAME of STRATEGY with its own overrides "
                        "(repeatable; the shared KEY=VALUE overrides go before the first --variant)")
    p.add_argument("--preset-prefix", default="cifar10mini", help="presets <prefix>_<strategy> (default: cifar10mini)")
    p.add_argument("--epochs", type=int, default=None, help="override the presets' 100 epochs")
    p.add_argument("--max-steps", type=int, default=None, help="stop each run early (plumbing checks)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (several small runs share one GPU well)")
    p.add_argument("--device", default=None)
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="stop every run after S seconds in all and report the curves so far (default: none)")
    p.add_argument("--metric", default="top1@k20")
    p.add_argument("--report-only", action="store_true", help="only gather the existing runs' logs")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="passed to every run")
    args = p.parse_args(argv)
    args.runs = plan_runs(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    walls = {} if args.report_only else train_all(args, out)
    curves = {}
    for s in args.runs:
        try:
            curves[s] = load_curve(out / s, args.metric, label=s)
        except Exception as exc:  # a failed run: report the others
            print(f"{s}: no k-NN curve ({exc})", file=sys.stderr)
    if not curves:
        return 1
    lines = table(curves, args.metric, args.overrides)
    state = health(out, list(args.runs), args)
    if state:
        lines += ["", "Training state at the last epoch of each run (mean over the epoch's iterations):", ""] + state
    print("\n".join(lines))
    (out / "pretrain_cifar.md").write_text("\n".join(lines) + "\n")
    (out / "pretrain_cifar.json").write_text(json.dumps(
        {s: {"epochs": list(c.epochs), args.metric: list(c.values), "wall_s": walls.get(s)} for s, c in curves.items()},
        indent=2) + "\n")
    init = next(iter(curves.values())).values[0]
    try:
        print(f"plot: {plot_curves(list(curves.values()), args.metric, out / 'knn_curves.png', baseline=init)}")
    except ImportError as exc:  # e.g. a GPU machine without matplotlib: the table and JSON are the results
        print(f"plot skipped ({exc}); `--report-only` on a machine with matplotlib draws it from the logs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
