"""``attmask-eval regress``: CI-style check of records against reported numbers.

A reference file (``configs/reported/<setting>.yaml`` or any path) lists entries of ``task``,
``dataset``, ``metric``, ``value``, ``tolerance`` (absolute, in the metric's unit), ``source`` and
optional ``protocol`` constraints (key -> value the record's protocol must hold). Each entry is
matched to records on (task, dataset, metric, constraints) and is

- ``pass``: matched, |value - reference| <= tolerance;
- ``fail``: matched, outside the tolerance;
- ``missing``: no record matches;
- ``ambiguous``: several matching records with different values.

Exit status 1 on any fail / missing / ambiguous.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadInput
from .records import find_records
from .resources import find_config, load_yaml

ENTRY_KEYS = {"task", "dataset", "metric", "value", "tolerance", "source", "protocol"}
REQUIRED_KEYS = ENTRY_KEYS - {"protocol"}


@dataclass(frozen=True)
class Reference:
    task: str
    dataset: str
    metric: str
    value: float
    tolerance: float
    source: str
    protocol: dict[str, Any]

    def describe(self) -> str:
        cons = ", ".join(f"{k}={v}" for k, v in sorted(self.protocol.items()))
        return f"{self.task}/{self.dataset} {self.metric}" + (f" [{cons}]" if cons else "")


@dataclass(frozen=True)
class Outcome:
    reference: Reference
    status: str  # pass | fail | missing | ambiguous
    value: float | None
    records: tuple[str, ...]


def load_reference(name_or_path: str) -> tuple[str, list[Reference]]:
    path = find_config("reported", name_or_path)
    raw = load_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list) or not raw["entries"]:
        raise BadInput(path, "expected a mapping with a non-empty 'entries' list")
    refs = []
    for i, e in enumerate(raw["entries"]):
        if not isinstance(e, dict):
            raise BadInput(path, f"entry {i} is not a mapping")
        missing = REQUIRED_KEYS - set(e)
        unknown = set(e) - ENTRY_KEYS
        if missing or unknown:
            raise BadInput(path, f"entry {i}: missing {sorted(missing)} unknown {sorted(unknown)}")
        try:
            value, tol = float(e["value"]), float(e["tolerance"])
        except (TypeError, ValueError):
            raise BadInput(path, f"entry {i}: value and tolerance must be numbers") from None
        if tol < 0 or not math.isfinite(value):
            raise BadInput(path, f"entry {i}: tolerance must be >= 0 and value finite")
        protocol = e.get("protocol") or {}
        if not isinstance(protocol, dict):
            raise BadInput(path, f"entry {i}: protocol constraints must be a mapping")
        refs.append(Reference(task=str(e["task"]), dataset=str(e["dataset"]), metric=str(e["metric"]), value=value,
                              tolerance=tol, source=str(e["source"]), protocol=protocol))
    return str(raw.get("setting", path.stem)), refs


def _protocol_matches(protocol: dict[str, Any], constraints: dict[str, Any]) -> bool:
    for key, want in constraints.items():
        node: Any = protocol
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        if isinstance(want, float) or isinstance(node, float):
            try:
                if not math.isclose(float(node), float(want), rel_tol=0, abs_tol=1e-9):
                    return False
            except (TypeError, ValueError):
                return False
        elif node != want:
            return False
    return True


def evaluate(refs: list[Reference], records: list[tuple[Path, dict[str, Any]]]) -> list[Outcome]:
    outcomes = []
    for ref in refs:
        matches = [(p, r) for p, r in records
                   if r["task"] == ref.task and r["dataset"] == ref.dataset and ref.metric in r["metrics"]
                   and _protocol_matches(r["protocol"], ref.protocol)]
        paths = tuple(str(p) for p, _ in matches)
        if not matches:
            outcomes.append(Outcome(ref, "missing", None, ()))
            continue
        values = {r["metrics"][ref.metric] for _, r in matches}
        if len(values) > 1:
            outcomes.append(Outcome(ref, "ambiguous", None, paths))
            continue
        value = values.pop()
        ok = abs(value - ref.value) <= ref.tolerance + 1e-9
        outcomes.append(Outcome(ref, "pass" if ok else "fail", value, paths))
    return outcomes


def format_outcomes(setting: str, outcomes: list[Outcome]) -> str:
    lines = [f"regress against {setting}:"]
    for o in outcomes:
        r = o.reference
        if o.value is not None:
            detail = f"{o.value:.2f} vs {r.value:.2f} ± {r.tolerance:g} (Δ {o.value - r.value:+.2f})"
        elif o.status == "ambiguous":
            detail = f"{len(o.records)} records disagree: {', '.join(o.records)}"
        else:
            detail = f"no record (reference {r.value:.2f}, {r.source})"
        lines.append(f"  {o.status.upper():9s} {r.describe()}: {detail}")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("pass", "fail", "missing", "ambiguous")}
    lines.append("  " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("regress", help="check records against reported numbers (exit 1 on any deviation)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True, metavar="NAME|PATH",
                   help="a configs/reported/ setting name or a YAML file")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    setting, refs = load_reference(args.reference)
    records = [pr for d in args.run_dirs for pr in find_records(d)]
    outcomes = evaluate(refs, records)
    print(format_outcomes(setting, outcomes))
    return 0 if all(o.status == "pass" for o in outcomes) else 1
