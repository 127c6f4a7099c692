"""Run one task end to end: plan -> run -> record (validated, atomic). Shared by the CLI and suites."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from . import distributed as dist
from . import envinfo, records
from .context import RunContext, peak_memory_mb
from .errors import BadInput
from .tasks import Task, UnavailableTask

log = logging.getLogger(__name__)


def planned_record_path(task: Task, args: argparse.Namespace, ctx: RunContext) -> tuple[Path, Any]:
    plan = task.plan(args, ctx)
    phash = records.protocol_hash(plan.protocol)
    return ctx.out / records.record_filename(task.record_task or task.name, plan.dataset, phash), plan


def run_task(task: Task, args: argparse.Namespace, ctx: RunContext | None = None) -> tuple[Path | None, dict[str, Any]]:
    """Run ``task`` with parsed ``args``; returns (record path or None on non-main ranks, record)."""
    if isinstance(task, UnavailableTask):
        raise BadInput(None, f"task {task.name!r} is not available here: {task.error}")
    ctx = ctx or RunContext(args)
    started = records.now_iso()
    t0 = time.perf_counter()
    plan = task.plan(args, ctx)
    if "reference" not in plan.protocol:
        raise TypeError(f"task {task.name} planned a protocol without 'reference'")
    result = task.run(args, ctx, plan)
    wall = time.perf_counter() - t0
    checkpoint = ctx.checkpoint_record() if task.uses_backbone else None
    if task.uses_backbone and checkpoint is None:
        raise RuntimeError(f"task {task.name} never loaded its backbone")
    record: dict[str, Any] = {
        "schema": records.SCHEMA_ID,
        "task": task.record_task or task.name,
        "dataset": plan.dataset,
        "split": plan.split,
        "metrics": {k: float(v) for k, v in result.metrics.items()},
        "protocol": plan.protocol,
        "protocol_hash": records.protocol_hash(plan.protocol),
        "checkpoint": checkpoint,
        "env": envinfo.collect(ctx.device),
        "cost": {"wall_s": round(wall, 3), "images": int(result.images or ctx.images_seen),
                 "peak_mem_mb": round(peak_memory_mb(ctx.device), 1)},
        "started": started,
        "finished": records.now_iso(),
    }
    if result.inputs is not None:
        record["inputs"] = result.inputs
    if result.artifacts:
        record["artifacts"] = result.artifacts
    if not dist.is_main():
        records.validate(record)
        return None, record
    path = records.write(ctx.out, record)
    log.info("record: %s", path)
    return path, record
