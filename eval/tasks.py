"""The task interface and registry.

A task is an object with a ``name``, its options (``add_arguments``), a ``plan`` that fixes the
dataset, split and protocol before any work starts (so suites can resume by protocol hash), and
a ``run`` that returns metrics. Tasks are found through the entry-point group ``attmask.tasks``;
a new task is a module exposing such an object plus one line in ``pyproject.toml``::

    [project.entry-points."attmask.tasks"]
    knn = "attmask.eval.knn:TASK"

Two kinds exist: backbone tasks (``uses_backbone = True``) get the common options of
``options.add_common_arguments`` (``--ckpt``, ``--data``/``--dataset``, ``--out``...); scoring
commands (``uses_backbone = False``) score existing outputs and get only ``--out`` and
``--dataset-name``; their records have ``checkpoint: null`` and list their ``inputs``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import RunContext

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "attmask.tasks"


@dataclass(frozen=True)
class Plan:
    """What a run will measure: fixed before it starts; hashed into the record's file name."""

    dataset: str
    split: str
    protocol: dict[str, Any]  # every parameter, plus ``reference: bool``


@dataclass
class TaskResult:
    metrics: dict[str, float]
    images: int = 0
    inputs: list[dict[str, str]] | None = None  # scoring commands: [{"path", "sha256"}]
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path relative to the run dir


class Task:
    """Base class of every task. Subclasses set ``name`` and ``help`` and implement the methods."""

    name: str = ""
    help: str = ""
    description: str | None = None
    uses_backbone: bool = True
    # The record's ``task`` when it differs from ``name``: a scoring command writes the record of
    # the task it scores (``retrieval-score`` -> ``retrieval``). None = ``name``.
    record_task: str | None = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Task-specific options; each ``help`` states the reference default."""

    def plan(self, args: argparse.Namespace, ctx: RunContext) -> Plan:
        raise NotImplementedError

    def run(self, args: argparse.Namespace, ctx: RunContext, plan: Plan) -> TaskResult:
        raise NotImplementedError


class UnavailableTask(Task):
    """Stands in for a registered task whose module failed to import; running it says why."""

    def __init__(self, name: str, entry: str, error: str) -> None:
        self.name = name
        self.entry = entry
        self.error = error
        self.help = f"(unavailable: {error})"


def _entry_points() -> list[EntryPoint]:
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def discover_tasks() -> dict[str, Task]:
    """Load every registered task; a task that cannot be imported becomes an ``UnavailableTask``."""
    tasks: dict[str, Task] = {}
    for ep in _entry_points():
        if ep.name in tasks:
            continue
        try:
            task = ep.load()
        except Exception as exc:  # an optional stack (mmdet...) may be missing: say so when used
            log.debug("task %s unavailable: %s", ep.name, exc)
            task = UnavailableTask(name=ep.name, entry=ep.value, error=f"{type(exc).__name__}: {exc}")
        if not isinstance(task, Task):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not an attmask Task")
        if task.name != ep.name:
            raise TypeError(f"entry point {ep.name} loads task named {task.name!r}")
        tasks[ep.name] = task
    return tasks


def get_task(name: str) -> Task:
    from .errors import BadInput

    tasks = discover_tasks()
    if name not in tasks:
        raise BadInput(None, f"unknown task {name!r} (registered: {', '.join(sorted(tasks))})")
    return tasks[name]
