"""``attmask-eval report``: tables (Markdown, CSV) and a chart comparing checkpoints.

Records are gathered recursively from each RUN_DIR. A record's *checkpoint label* is the first
folder below the RUN_DIR it was found in (the suite layout ``RUN_DIR/<label>/…``), or the RUN_DIR's
own name for records directly inside it. Rows are (task, dataset, metric, protocol variant);
the variant is the first 8 hex of the protocol hash and is shown only where a task × dataset
was run with more than one protocol.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_save, atomic_write_text
from .errors import BadInput
from .records import find_records

log = logging.getLogger(__name__)

# The metric a reader looks at first, per task (the paper's headline numbers).
HEADLINE: dict[str, tuple[str, ...]] = {
    "knn": ("top1@k20",),
    "linear": ("top1",),
    "fewshot": ("top1@n1", "top1@n5", "top1@n10", "top1@n20"),
    "finetune": ("top1_best",),
    "retrieval": ("mAP_medium", "mAP_hard"),
    "davis": ("J&F_mean", "J_mean", "F_mean"),
    "coco": ("bbox_AP", "segm_AP"),
    "ade20k": ("mIoU",),
    "pretrain": ("loss", "knn_top1@k20"),
}


@dataclass
class Entry:
    label: str
    path: Path
    record: dict[str, Any]

    @property
    def variant(self) -> str:
        return self.record["protocol_hash"][:8]


def collect(run_dirs: list[Path]) -> list[Entry]:
    entries = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        for path, record in find_records(run_dir):
            rel = path.relative_to(run_dir)
            label = rel.parts[0] if len(rel.parts) > 1 else run_dir.resolve().name
            entries.append(Entry(label=label, path=path, record=record))
    if not entries:
        raise BadInput(run_dirs[0] if run_dirs else None, "no records found")
    return entries


def _row_key(e: Entry) -> tuple[str, str, str]:
    return (e.record["task"], e.record["dataset"], e.variant)


def build_table(entries: list[Entry], headline_only: bool) -> tuple[list[str], list[tuple[tuple, list[str]]],
                                                                   dict[tuple, dict[str, float]]]:
    """Returns (checkpoint labels, [(row key, row descriptor)], values[row key][label]).

    A row key is (task, dataset, variant, metric); the descriptor is what the tables print.
    """
    labels = sorted({e.label for e in entries})
    variants: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in entries:
        variants[(e.record["task"], e.record["dataset"])].add(e.variant)
    values: dict[tuple, dict[str, float]] = defaultdict(dict)
    protocols: dict[tuple, dict[str, Any]] = {}
    for e in entries:
        task, dataset, variant = _row_key(e)
        for metric, value in e.record["metrics"].items():
            if headline_only and task in HEADLINE and HEADLINE[task] and metric not in HEADLINE[task]:
                continue
            key = (task, dataset, variant, metric)
            values[key][e.label] = value
            protocols[key] = e.record["protocol"]
    rows = []
    for key in sorted(values):
        task, dataset, variant, metric = key
        shown_variant = variant if len(variants[(task, dataset)]) > 1 else ""
        ref = "" if protocols[key].get("reference") else " (non-ref)"
        rows.append((key, [task, dataset + ref, metric, shown_variant]))
    return labels, rows, values


def _fmt(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def render_markdown(entries: list[Entry]) -> str:
    out = io.StringIO()
    out.write("# attmask report\n\n")
    for title, headline in (("Headline metrics", True), ("All metrics", False)):
        labels, rows, values = build_table(entries, headline)
        out.write(f"## {title}\n\n")
        out.write("| task | dataset | metric | variant | " + " | ".join(labels) + " |\n")
        out.write("|" + "---|" * (4 + len(labels)) + "\n")
        for key, row in rows:
            cells = [_fmt(values[key].get(label)) for label in labels]
            out.write("| " + " | ".join(row + cells) + " |\n")
        out.write("\n")
    out.write("Values in percent. `(non-ref)`: the run departs from the reference protocol "
              "(e.g. reduced resolution or epochs); never compare it with a paper number.\n\n")
    out.write("## Records\n\n")
    for e in sorted(entries, key=lambda e: (e.label, str(e.path))):
        ck = e.record["checkpoint"]
        src = ck["path"] if ck else ", ".join(i["path"] for i in e.record.get("inputs", []))
        out.write(f"- `{e.label}` {e.record['task']}/{e.record['dataset']} ({e.variant}): `{e.path}` "
                  f"from `{src}`, {e.record['cost']['wall_s']:.1f} s\n")
    return out.getvalue()


def render_csv(entries: list[Entry]) -> str:
    labels, rows, values = build_table(entries, headline_only=False)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["task", "dataset", "metric", "variant", *labels])
    for key, _row in rows:
        w.writerow([key[0], key[1], key[3], key[2], *[_fmt(values[key].get(label)) for label in labels]])
    return buf.getvalue()


def render_png(entries: list[Entry], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, rows, values = build_table(entries, headline_only=True)
    keys = [key for key, _ in rows]
    shown_variant = {key: row[3] for key, row in rows}
    n = max(1, len(keys))
    cols = min(4, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, keys):
        vals = [values[key].get(label, float("nan")) for label in labels]
        ax.bar(range(len(labels)), vals, color=[colors[i % len(colors)] for i in range(len(labels))])
        task, dataset, _variant, metric = key
        variant = shown_variant[key]
        ax.set_title(f"{task} {dataset}\n{metric}" + (f" [{variant}]" if variant else ""), fontsize=8)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        for i, v in enumerate(vals):
            if not math.isnan(v):
                ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=6)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle("attmask: headline metrics per checkpoint (percent)", fontsize=10)
    fig.tight_layout()
    atomic_save(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)


def write_report(run_dirs: list[Path], out: Path | None = None) -> dict[str, Path]:
    entries = collect(run_dirs)
    out = Path(out) if out is not None else Path(run_dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "report.md", "csv": out / "report.csv", "png": out / "report.png"}
    atomic_write_text(paths["md"], render_markdown(entries))
    atomic_write_text(paths["csv"], render_csv(entries))
    render_png(entries, paths["png"])
    return paths


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables and a chart comparing the records of run folders",
                       description="Write report.md, report.csv (tasks x checkpoints) and report.png from every "
                                   "record found (recursively) in the given run folders.")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the first RUN_DIR)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = write_report(args.run_dirs, args.out)
    print(paths["md"].read_text().split("## All metrics")[0].rstrip())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
