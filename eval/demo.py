"""``attmask-eval demo``: the main job — pre-train, evaluate everything, report, regress.

On 2 CPU cores in about 20 minutes (after installation), with the real mini datasets of
``$ATTMASK_DATA``:

1. pre-trains small ViTs on ``cifar10-mini`` with AttMask-High and with random masking (same budget
   and seed), through the ``pretrain`` task;
2. runs the suite ``configs/suites/demo.yaml`` on each checkpoint and on a random-init baseline of
   the same architecture: k-NN, linear (fast), few-shot, retrieval on the mini Oxford / Paris,
   DAVIS on the mini sequences, short COCO (DAVIS frames as COCO instances) and ADE20K
   fine-tunes — all at reduced resolutions and lengths, so every record is ``reference: false``;
3. writes the report (``report.md``, ``report.csv``, ``report.png``), the k-NN-vs-epoch curves of
   the pre-training runs, the attention / mask figure, and regresses each checkpoint's records
   against the mini-benchmark references ``configs/reported/<suite>_<label>.yaml``
   (``demo_attmask_high``, ``demo_rand``, ``demo_random_init``);
4. prints where everything is.

Without ``$ATTMASK_DATA`` it runs ``configs/suites/demo-digits.yaml`` (classification on
scikit-learn's bundled digits) and says which tasks it skipped and why. Tasks whose datasets are
missing are skipped the same way. Re-running resumes: finished tasks are not run again.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from .datasets import DATA_ENV, dataset_dir
from .errors import BadInput
from .records import find_records
from .regress import evaluate, format_outcomes, load_reference
from .report import write_report
from .resources import available
from .suite import Suite, load_suite, run_suite

log = logging.getLogger(__name__)

# Frames of davis-mini turned into a COCO instance set for the demo's detection fine-tune.
DEMO_COCO_SPLITS = {
    "train2017": {"blackswan": list(range(0, 50, 5)), "car-shadow": list(range(0, 40, 4)),
                  "dog": list(range(0, 60, 6)), "libby": list(range(0, 49, 5))},
    "val2017": {"blackswan": [2, 27, 47], "car-shadow": [2, 22, 38], "dog": [3, 33, 57], "libby": [2, 27, 47],
                "drift-chicane": [5, 25, 45]},
}
DEMO_COCO_FOLDER = "data/davis-mini-coco"


def _dataset_missing(name: str) -> str | None:
    """Why a registered dataset cannot be used here, or None when it can."""
    try:
        dataset_dir(name)
    except BadInput as exc:
        return str(exc)
    return None


def _pretrain_cli() -> list[str]:
    return [sys.executable, "-m", "attmask.pretrain.cli"]


def prepare_derived_data(out: Path) -> Path | None:
    """The COCO-layout set made from davis-mini frames (``RUN_DIR/data/davis-mini-coco``)."""
    from .davis_coco import davis_to_coco

    dest = out / DEMO_COCO_FOLDER
    if (dest / "annotations" / "instances_val2017.json").exists():
        return dest
    if _dataset_missing("davis-mini"):
        return None
    return davis_to_coco(dataset_dir("davis-mini"), dest, DEMO_COCO_SPLITS)


def select_tasks(suite: Suite) -> tuple[Suite, list[tuple[str, str]]]:
    """Drop tasks whose datasets are missing; returns the runnable suite and (task, reason) skips."""
    kept, skipped = [], []
    for t in suite.tasks:
        reasons = [r for n in t.needs if (r := _dataset_missing(n))]
        if reasons:
            skipped.append((t.task, reasons[0]))
        else:
            kept.append(t)
    return replace(suite, tasks=kept), skipped


def _run_visuals(suite: Suite, out: Path) -> dict[str, Path]:
    """k-NN-vs-epoch curves of the pre-training runs and the attention / mask figure."""
    made: dict[str, Path] = {}
    pre_runs = [(c.label, out / c.label / "pretrain") for c in suite.checkpoints if c.pretrain is not None]
    pre_runs = [(label, d) for label, d in pre_runs if (d / "checkpoint.pth").is_file()]
    if not pre_runs:
        return made
    baseline = None
    for c in suite.checkpoints:
        if c.ckpt and c.ckpt.startswith("random:"):
            for _, rec in find_records(out / c.label) if (out / c.label).is_dir() else []:
                if rec["task"] == "knn" and "top1@k20" in rec["metrics"]:
                    baseline = rec["metrics"]["top1@k20"]
    cmd = [*_pretrain_cli(), "curves", *[str(d) for _, d in pre_runs], "--labels", *[lab for lab, _ in pre_runs],
           "--out", str(out)]
    if baseline is not None:
        cmd += ["--baseline", f"{baseline:.2f}"]
    if (rc := subprocess.run(cmd).returncode) == 0:
        made["curves"] = out / "knn_curves.png"
    else:
        log.warning("demo: the k-NN curves failed (exit %d); see the output above", rc)
    images = suite_images_for_figure()
    if images is not None:
        label, run = pre_runs[0]
        vis = out / "visualize"
        cmd = [*_pretrain_cli(), "visualize", "--ckpt", str(run / "checkpoint.pth"), "--images", str(images),
               "--out", str(vis), "--limit", "6"]
        if (rc := subprocess.run(cmd).returncode) == 0:
            made[f"attention / masks ({label})"] = vis
        else:
            log.warning("demo: the attention / mask figure failed (exit %d); see the output above", rc)
    return made


def suite_images_for_figure() -> Path | None:
    """A few real images for the qualitative figure: cifar10-mini's test split, else the digits."""
    for name, sub in (("cifar10-mini", "test"), ("sklearn-digits", "test")):
        if _dataset_missing(name) is None:
            return dataset_dir(name) / sub
    return None


def _regress(suite_name: str, suite: Suite, out: Path) -> tuple[bool, list[str]]:
    lines, ok = [], True
    for c in suite.checkpoints:
        ref = f"{suite_name.replace('-', '_')}_{c.label}"  # e.g. configs/reported/demo_attmask_high.yaml
        if ref not in available("reported") or not (out / c.label).is_dir():
            continue
        setting, refs = load_reference(ref)
        outcomes = evaluate(refs, list(find_records(out / c.label)))
        ok &= all(o.status == "pass" for o in outcomes)
        lines.append(format_outcomes(setting, outcomes))
    return ok, lines


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: pre-train, evaluate every task, report and regress",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    p.add_argument("--suite", default=None, metavar="NAME|PATH",
                   help="suite to run (default: demo, or demo-digits when $ATTMASK_DATA is not set)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    have_data = bool(os.environ.get(DATA_ENV)) and Path(os.environ[DATA_ENV]).is_dir()
    suite_name = args.suite or ("demo" if have_data else "demo-digits")
    if not have_data:
        print(f"${DATA_ENV} is not set (or not a folder): running the classification demo on scikit-learn's "
              "digits; retrieval, DAVIS, COCO and ADE20K need the mini datasets.")
    suite = load_suite(suite_name)
    out.mkdir(parents=True, exist_ok=True)
    prepare_derived_data(out)
    suite, skipped = select_tasks(suite)
    for task, why in skipped:
        print(f"skipping {task}: {why}")
    common = {"device": args.device} if args.device else {}
    outcomes = run_suite(suite, out, common)
    visuals = _run_visuals(suite, out)
    report = write_report([out]) if any(o.status != "failed" for o in outcomes) else {}
    regress_ok, regress_lines = _regress(Path(suite_name).stem, suite, out)

    print(f"\ndemo ({suite.name}) finished:")
    for o in outcomes:
        print(f"  {o.status:8s} {o.label} / {o.task}")
    for task, why in skipped:
        print(f"  skipped  {task}: {why}")
    if report:
        print("\n" + report["md"].read_text().split("## All metrics")[0].strip())
    for line in regress_lines:
        print("\n" + line)
    print("\nwhere everything is:")
    for kind, path in report.items():
        print(f"  report ({kind}): {path}")
    for kind, path in visuals.items():
        print(f"  {kind}: {path}")
    print(f"  records and logs: {out}/<checkpoint>/ (pre-training runs in {out}/<checkpoint>/pretrain/)")
    failed = any(o.status == "failed" for o in outcomes)
    return 1 if failed or not regress_ok else 0
