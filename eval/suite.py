"""``attmask-eval suite``: several tasks on several checkpoints, resumable, ending with the report.

A suite file (``configs/suites/<name>.yaml`` or a path)::

    name: classification
    checkpoints:                      # replaced by --ckpt when given
      - {label: random, ckpt: "random:vit_small"}
      - label: attmask_high           # pre-train first (the `pretrain` task), then evaluate
        pretrain: {config: cifar10mini_cpu_attmask_high, epochs: 4, positional: [eval_every=1]}
    tasks:
      - {task: knn, args: {dataset: cifar10-mini, resize: 32, crop: 32}}
      - {task: linear, args: {dataset: cifar10-mini, mode: fast}}

Each checkpoint gets ``RUN_DIR/<label>/``. A task whose record already exists there with the same
checkpoint sha256 and protocol hash is skipped (resume). A failing task is reported and the rest
continue; the exit status is 1 if any task failed. In argument values, ``{out}`` stands for the
suite's RUN_DIR (e.g. ``data: "{out}/data/derived-set"``); a task may list the registered datasets
it ``needs``, so a runner can skip it (saying why) when they are missing.
"""

from __future__ import annotations

import argparse
import logging
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from . import records
from .context import RunContext
from .errors import BadInput, TaskFailed
from .options import add_task_arguments
from .resources import find_config, load_yaml
from .runner import planned_record_path, run_task
from .tasks import Task, UnavailableTask, get_task

log = logging.getLogger(__name__)


@dataclass
class CheckpointEntry:
    label: str
    ckpt: str | None = None
    pretrain: dict[str, Any] | None = None
    args: dict[str, Any] = field(default_factory=dict)  # extra common args (checkpoint-key, arch...)


@dataclass
class TaskEntry:
    task: str
    args: dict[str, Any]
    needs: list[str] = field(default_factory=list)


@dataclass
class Suite:
    name: str
    path: Path
    checkpoints: list[CheckpointEntry]
    tasks: list[TaskEntry]


def label_for(ckpt: str) -> str:
    """A folder-safe label for a checkpoint given on the command line."""
    if ckpt.startswith("random:"):
        return "random-" + ckpt.split(":", 1)[1]
    p = Path(ckpt)
    stem = p.stem if p.parent.name in ("", ".") else f"{p.parent.name}-{p.stem}"
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", stem)


def load_suite(name_or_path: str, ckpts: list[str] | None = None) -> Suite:
    path = find_config("suites", name_or_path)
    raw = load_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), list) or not raw["tasks"]:
        raise BadInput(path, "a suite needs a non-empty 'tasks' list")
    tasks = []
    for i, t in enumerate(raw["tasks"]):
        if not isinstance(t, dict) or "task" not in t:
            raise BadInput(path, f"tasks[{i}] needs a 'task' name")
        args = t.get("args") or {}
        if not isinstance(args, dict):
            raise BadInput(path, f"tasks[{i}].args must be a mapping")
        needs = t.get("needs") or []
        if not isinstance(needs, list):
            raise BadInput(path, f"tasks[{i}].needs must be a list of dataset names")
        tasks.append(TaskEntry(task=str(t["task"]), args=args, needs=[str(n) for n in needs]))
    checkpoints = []
    if ckpts:
        checkpoints = [CheckpointEntry(label=label_for(c), ckpt=c) for c in ckpts]
    else:
        for i, c in enumerate(raw.get("checkpoints") or []):
            if not isinstance(c, dict) or "label" not in c or ("ckpt" in c) == ("pretrain" in c):
                raise BadInput(path, f"checkpoints[{i}] needs a 'label' and exactly one of 'ckpt' / 'pretrain'")
            checkpoints.append(CheckpointEntry(label=str(c["label"]), ckpt=c.get("ckpt"), pretrain=c.get("pretrain"),
                                               args=c.get("args") or {}))
    if not checkpoints:
        raise BadInput(path, "no checkpoints: list them under 'checkpoints' or pass --ckpt")
    labels = [c.label for c in checkpoints]
    if len(set(labels)) != len(labels):
        raise BadInput(path, f"checkpoint labels must be unique ({labels})")
    return Suite(name=str(raw.get("name", path.stem)), path=path, checkpoints=checkpoints, tasks=tasks)


def substitute_out(args: dict[str, Any], out: Path) -> dict[str, Any]:
    """Replace ``{out}`` in string values (and list items) by the suite's RUN_DIR."""
    def sub(v: Any) -> Any:
        if isinstance(v, str):
            return v.replace("{out}", str(out))
        if isinstance(v, list):
            return [sub(x) for x in v]
        return v

    return {k: sub(v) for k, v in args.items()}


def args_to_argv(args: dict[str, Any]) -> list[str]:
    """``{dataset: x, no_cache: true, ks: [10, 20]}`` -> ``--dataset x --no-cache --ks 10 20``.

    The key ``positional`` holds values passed as positional arguments, after the options (e.g. the
    ``pretrain`` task's ``KEY=VALUE`` overrides).
    """
    argv: list[str] = []
    positional = args.get("positional") or []
    for key, value in args.items():
        if key == "positional":
            continue
        flag = "--" + str(key).replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list | tuple):
            argv.append(flag)
            argv.extend(str(v) for v in value)
        else:
            argv.extend([flag, str(value)])
    return argv + [str(v) for v in (positional if isinstance(positional, list) else [positional])]


class _SuiteArgParser(argparse.ArgumentParser):
    suite_path: Path | None = None

    def error(self, message: str) -> NoReturn:
        raise BadInput(self.suite_path, f"{self.prog}: {message}")


def parse_task_args(task: Task, argv: list[str], suite_path: Path) -> argparse.Namespace:
    parser = _SuiteArgParser(prog=f"task {task.name}", add_help=False)
    parser.suite_path = suite_path
    add_task_arguments(parser, task)
    return parser.parse_args(argv)


@dataclass
class TaskOutcome:
    label: str
    task: str
    status: str  # done | skipped | failed
    detail: str = ""


def _existing_matches(path: Path, sha256: str | None) -> bool:
    if not path.exists():
        return False
    try:
        rec = records.read(path)
    except BadInput:
        return False
    ck = rec.get("checkpoint")
    return sha256 is None or (ck is not None and ck["sha256"] == sha256)


def _run_one(task: Task, argv: list[str], suite: Suite, label: str) -> tuple[TaskOutcome, RunContext | None]:
    try:
        if isinstance(task, UnavailableTask):
            raise BadInput(None, f"task {task.name!r} is not available here: {task.error}")
        args = parse_task_args(task, argv, suite.path)
        ctx = RunContext(args)
        path, _plan = planned_record_path(task, args, ctx)
        sha = ctx.backbone().info.sha256 if task.uses_backbone else None
        if _existing_matches(path, sha):
            return TaskOutcome(label, task.name, "skipped", f"record exists: {path}"), ctx
        out_path, _record = run_task(task, args, ctx)
        return TaskOutcome(label, task.name, "done", str(out_path)), ctx
    except (BadInput, TaskFailed) as exc:
        return TaskOutcome(label, task.name, "failed", " ".join(str(exc).split())), None
    except Exception as exc:  # a failing task is reported; the rest continue
        log.error("task %s on %s failed:\n%s", task.name, label, traceback.format_exc())
        return TaskOutcome(label, task.name, "failed", f"{type(exc).__name__}: {exc}"), None


def run_suite(suite: Suite, out: Path, common: dict[str, Any] | None = None) -> list[TaskOutcome]:
    common = common or {}
    outcomes: list[TaskOutcome] = []
    for entry in suite.checkpoints:
        ck_dir = out / entry.label
        ckpt = entry.ckpt
        if entry.pretrain is not None:
            pre_dir = ck_dir / "pretrain"
            pre_args = substitute_out({**entry.pretrain, "out": str(pre_dir)}, out)
            outcome, _ = _run_one(get_task("pretrain"), args_to_argv(pre_args), suite, entry.label)
            outcomes.append(outcome)
            log.info("[%s] pretrain: %s %s", entry.label, outcome.status, outcome.detail)
            if outcome.status == "failed":
                for t in suite.tasks:
                    outcomes.append(TaskOutcome(entry.label, t.task, "failed", "pre-training failed"))
                continue
            ckpt = str(pre_dir / "checkpoint.pth")
        for t in suite.tasks:
            try:
                task = get_task(t.task)
            except BadInput as exc:
                outcomes.append(TaskOutcome(entry.label, t.task, "failed", str(exc)))
                continue
            args = substitute_out(dict(t.args), out)
            if task.uses_backbone:
                args = {**common, **entry.args, **args, "ckpt": ckpt}
            args["out"] = str(ck_dir)
            outcome, _ = _run_one(task, args_to_argv(args), suite, entry.label)
            outcomes.append(outcome)
            log.info("[%s] %s: %s %s", entry.label, t.task, outcome.status, outcome.detail)
    return outcomes


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("suite", help="run a suite of tasks on several checkpoints, then report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", required=True, metavar="NAME|PATH", help="a configs/suites/ name or a YAML file")
    p.add_argument("--out", required=True, type=Path, metavar="RUN_DIR", help="output folder")
    p.add_argument("--ckpt", action="append", default=None, metavar="C",
                   help="evaluate this checkpoint instead of the suite's (repeatable)")
    p.add_argument("--device", default=None, help="torch device for every task (default: cuda when available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .report import write_report

    suite = load_suite(args.suite, args.ckpt)
    common = {"device": args.device} if args.device else {}
    outcomes = run_suite(suite, args.out, common)
    print(f"suite {suite.name}:")
    for o in outcomes:
        print(f"  {o.status:8s} {o.label} / {o.task}: {o.detail}")
    if any(o.status != "failed" for o in outcomes):
        try:
            paths = write_report([args.out])
            print(paths["md"].read_text().split("## All metrics")[0].rstrip())
            print(f"report: {paths['md']}")
        except BadInput as exc:
            print(f"no report: {exc}")
    failed = [o for o in outcomes if o.status == "failed"]
    return 1 if failed else 0
