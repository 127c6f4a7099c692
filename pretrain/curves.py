"""k-NN vs epoch for several runs in one PNG, and how many epochs each needs to reach a target.

Reads the ``eval`` lines of ``RUN_DIR/log.jsonl`` (the teacher's online k-NN). The convergence claim
of AttMask ("reaches random block-wise masking's final k-NN in 42% fewer epochs", ECCV 2022 §4) is
:func:`epochs_to_reach` of each run against the baseline's final value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from attmask.eval.errors import BadInput

from .runlog import read_log


@dataclass(frozen=True)
class Curve:
    label: str
    epochs: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def final(self) -> float:
        return self.values[-1]


def load_curve(run_dir: str | os.PathLike[str], metric: str = "top1@k20", label: str | None = None) -> Curve:
    entries = [e for e in read_log(run_dir, "eval") if metric in e]
    if not entries:
        raise BadInput(Path(run_dir) / "log.jsonl", f"no online k-NN entries with {metric!r} (was eval_every 0?)")
    by_epoch = {int(e["epoch"]): float(e[metric]) for e in entries}  # a resumed run's later entry wins
    epochs = tuple(sorted(by_epoch))
    return Curve(label or Path(run_dir).resolve().name, epochs, tuple(by_epoch[e] for e in epochs))


def epochs_to_reach(curve: Curve, target: float) -> int | None:
    """First evaluated epoch whose value is ≥ ``target`` (None if never)."""
    for e, v in zip(curve.epochs, curve.values):
        if v >= target:
            return e
    return None


def plot_curves(curves: list[Curve], metric: str, path: str | os.PathLike[str],
                baseline: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for c in curves:
        ax.plot(c.epochs, c.values, marker="o", markersize=3, label=c.label)
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle=":", linewidth=1, label="random init")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"teacher k-NN {metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def summary_table(curves: list[Curve]) -> list[str]:
    """Lines: label, final, best, and epochs to reach the first run's final value (with the saving)."""
    ref = curves[0]
    lines = [f"{'run':<32} {'final':>7} {'best':>7} {'epochs to ' + format(ref.final, '.2f'):>16}"]
    ref_epochs = epochs_to_reach(ref, ref.final)
    for c in curves:
        reach = epochs_to_reach(c, ref.final)
        if reach is None:
            when = "never"
        elif ref_epochs:
            when = f"{reach} ({1 - reach / ref_epochs:+.0%} fewer)" if c is not ref else str(reach)
        else:
            when = str(reach)
        lines.append(f"{c.label:<32} {c.final:7.2f} {max(c.values):7.2f} {when:>16}")
    return lines
