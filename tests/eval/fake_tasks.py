"""Tiny tasks for testing the runner, suites and reports without the real protocols."""

from __future__ import annotations

import argparse

from attmask.eval.context import RunContext
from attmask.eval.tasks import Plan, Task, TaskResult


class CountTask(Task):
    """Loads the backbone and reports its width and a value given on the command line."""

    name = "count"
    help = "test task"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--value", type=float, default=50.0, help="metric value (default: 50)")
        parser.add_argument("--reduced", action="store_true", help="mark non-reference")

    def plan(self, args: argparse.Namespace, ctx: RunContext) -> Plan:
        return Plan(dataset=args.dataset or "synthetic", split="test",
                    protocol={"value": args.value, "reference": not args.reduced})

    def run(self, args: argparse.Namespace, ctx: RunContext, plan: Plan) -> TaskResult:
        width = ctx.backbone().info.arch.embed_dim
        return TaskResult(metrics={"score": args.value, "width": float(width)}, images=7)


class BrokenTask(Task):
    name = "broken"
    help = "always fails"

    def plan(self, args: argparse.Namespace, ctx: RunContext) -> Plan:
        return Plan(dataset="synthetic", split="test", protocol={"reference": True})

    def run(self, args: argparse.Namespace, ctx: RunContext, plan: Plan) -> TaskResult:
        raise RuntimeError("deliberate failure")


FAKE_TASKS: dict[str, Task] = {"count": CountTask(), "broken": BrokenTask()}
