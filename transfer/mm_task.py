"""The common shape of the fine-tuning tasks run through mmengine (``coco``, ``ade20k``).

``plan`` loads the preset, applies ``--cfg-options``, loads the checkpoint (for the record and the
embed dim), fills the config and derives the protocol: the preset's facts (``schedule``,
``reference``...), the run's (total batch, AMP, splits, seed, test-only) and the resolved config
as a recipe with placeholders (``${DATA}``, ``${CKPT}``, ``${OUT}``) plus its sha256.
``protocol.reference`` is the preset's ``attmask.reference`` and stays true only while nothing
departs from it: no ``--cfg-options``, the preset's total batch, the registry's splits.

``run`` trains and tests in the work folder ``RUN_DIR/<record stem>/`` (mmengine logs,
``config.py``, checkpoints, ``last_checkpoint``), so ``--resume`` and ``--test-only`` find the
same folder for the same protocol. ``--test-only --finetuned PTH`` scores a model fine-tuned
elsewhere: its protocol says ``test_only: true`` and the file's sha256 (``finetuned``); plain
``--test-only`` re-tests this protocol's own last checkpoint and rewrites the same record.
Subclasses say how the data is found and filled in.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attmask.eval import distributed as dist
from attmask.eval.context import RunContext
from attmask.eval.datasets import registry_name_for
from attmask.eval.errors import BadInput, TaskFailed
from attmask.eval.records import protocol_hash, record_stem
from attmask.eval.tasks import Plan, Task, TaskResult

from . import mm_runner

log = logging.getLogger(__name__)


@dataclass
class DataInfo:
    """Where the data is: root folder, split names and image counts (train None when not trained)."""

    root: Path
    train_split: str | None
    test_split: str
    test_images: int
    default_splits: bool
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prepared:
    preset: str
    cfg: Any
    data: DataInfo
    protocol: dict[str, Any]


class MMTask(Task):
    """Base of ``coco`` / ``ade20k``; subclasses set ``kind``, ``default_preset`` and the data hooks."""

    kind: str = ""  # configs/<kind>/: mmdet | mmseg
    data_kind: str = ""  # the datasets.yaml kind: coco | ade20k
    default_preset: str = ""
    expected_metrics: tuple[str, ...] = ()

    def __init__(self) -> None:
        # plan() and run() of one invocation share the prepared config; keyed by the args object itself
        # (an id() key could be reused by a later invocation's args after the first was freed)
        self._prepared: tuple[argparse.Namespace, Prepared] | None = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        mm_runner.add_mm_arguments(parser, self.kind, self.default_preset)

    # -- hooks ------------------------------------------------------------------------------------
    def resolve_data(self, args: argparse.Namespace, need_train: bool) -> DataInfo:
        raise NotImplementedError

    def fill_data(self, cfg: Any, data: DataInfo) -> None:
        raise NotImplementedError

    def protocol_extra(self, cfg: Any, data: DataInfo) -> dict[str, Any]:
        return {}

    def set_outputs(self, cfg: Any, out: Path, stem: str) -> dict[str, str]:
        """Point result files into the run folder; returns artifact name -> path relative to it."""
        return {}

    # -- plan / run -------------------------------------------------------------------------------
    def _prepare(self, args: argparse.Namespace, ctx: RunContext) -> Prepared:
        if self._prepared is not None and self._prepared[0] is args:
            return self._prepared[1]
        if args.finetuned is not None and not args.test_only:
            raise BadInput(args.finetuned, "--finetuned is for --test-only runs")
        if args.finetuned is not None and not Path(args.finetuned).is_file():
            raise BadInput(args.finetuned, "no such file (expected an mmengine checkpoint of the fine-tuned model)")
        preset, _path, cfg = mm_runner.load_preset(self.kind, args.config)
        overridden = bool(args.cfg_options)
        if overridden:
            cfg.merge_from_dict(args.cfg_options)
        # A test-only run of an external fine-tuned model is its own protocol; re-testing this run's
        # own last checkpoint (--test-only alone) keeps the training protocol, hence its work folder.
        external = bool(args.test_only and args.finetuned is not None)
        data = self.resolve_data(args, need_train=not external)
        bb = ctx.backbone()
        mm_runner.fill_backbone(cfg, args)
        mm_runner.fill_widths(cfg, bb.info.arch.embed_dim)
        self.fill_data(cfg, data)
        facts = mm_runner.configure_runtime(cfg, args, ctx.out, ctx.device, ctx.num_workers)
        rec = mm_runner.recipe(cfg, {str(data.root): "${DATA}", str(args.ckpt): "${CKPT}", str(ctx.out): "${OUT}"})
        meta = dict(cfg.attmask)
        total_ref = meta.get("total_batch_size")
        reference = (bool(meta.get("reference", False)) and not overridden and data.default_splits
                     and (total_ref is None or facts["total_batch_size"] == total_ref))
        loop = cfg.train_cfg
        optim = cfg.optim_wrapper
        protocol: dict[str, Any] = {
            "preset": preset,
            "source": meta.get("source"),
            "schedule": meta.get("schedule"),
            "epochs": loop.get("max_epochs"),
            "iters": loop.get("max_iters"),
            "total_batch_size": facts["total_batch_size"],
            "optimizer": optim.optimizer.get("type"),
            "lr": optim.optimizer.get("lr"),
            "weight_decay": optim.optimizer.get("weight_decay"),
            "layer_decay": (optim.get("paramwise_cfg") or {}).get("layer_decay_rate"),
            "auto_scale_lr": bool(args.auto_scale_lr),
            "amp": facts["amp"],
            "train_split": data.train_split,
            "test_split": data.test_split,
            "seed": int(args.seed),
            "test_only": external,
            "finetuned": mm_runner.sha256_or_none(args.finetuned),
            "cfg_options": {str(k): v for k, v in (args.cfg_options or {}).items()},
            **self.protocol_extra(cfg, data),
            "config": rec,
            "config_sha256": protocol_hash(rec),  # the records' canonical-JSON sha256
            "reference": bool(reference),
        }
        prep = Prepared(preset=preset, cfg=cfg, data=data, protocol=protocol)
        self._prepared = (args, prep)
        return prep

    def dataset_label(self, args: argparse.Namespace, ctx: RunContext) -> str:
        """``--dataset``, else ``--dataset-name``, else the registered name of the ``--data`` folder, else its name."""
        if args.dataset is None and args.dataset_name is None and args.data is not None:
            name = registry_name_for(Path(args.data), self.data_kind)
            if name is not None:
                return name
        return ctx.dataset_label()

    def plan(self, args: argparse.Namespace, ctx: RunContext) -> Plan:
        prep = self._prepare(args, ctx)
        return Plan(dataset=self.dataset_label(args, ctx), split=prep.data.test_split, protocol=prep.protocol)

    def run(self, args: argparse.Namespace, ctx: RunContext, plan: Plan) -> TaskResult:
        prep = self._prepare(args, ctx)
        self._prepared = None
        cfg = prep.cfg
        stem = record_stem(self.record_task or self.name, plan.dataset, plan.protocol)
        work_dir = ctx.out / stem
        cfg.work_dir = str(work_dir)
        cfg.resume = bool(args.resume)
        artifacts = self.set_outputs(cfg, ctx.out, stem)
        finetuned: Path | None = None
        if args.test_only:
            finetuned = Path(args.finetuned) if args.finetuned else mm_runner.last_checkpoint(work_dir)
            if finetuned is None:
                raise BadInput(work_dir, "--test-only without --finetuned needs a checkpoint from an earlier "
                                         "run of this protocol in this folder (none found)")
        if dist.is_main():
            work_dir.mkdir(parents=True, exist_ok=True)
            cfg.dump(str(work_dir / "config.py"))
        log.info("%s: preset %s, work folder %s", self.name, prep.preset, work_dir)
        metrics, iters = mm_runner.run(cfg, ctx.device, train=not args.test_only, finetuned=finetuned)
        missing = [m for m in self.expected_metrics if m not in metrics]
        unexpected = sorted(set(metrics) - set(self.expected_metrics))
        if unexpected:
            raise TaskFailed(f"{self.name}: the evaluator returned unexpected metrics {unexpected}")
        if missing:
            log.warning("%s: undefined on this data, left out of the record: %s", self.name, ", ".join(missing))
        if not metrics:
            raise TaskFailed(f"{self.name}: no metric is defined on this test set")
        artifacts["config"] = str((work_dir / "config.py").relative_to(ctx.out))
        last = mm_runner.last_checkpoint(work_dir)
        if last is not None and args.finetuned is None:  # this protocol's own fine-tuned model
            try:
                artifacts["checkpoint"] = str(last.resolve().relative_to(ctx.out.resolve()))
            except ValueError:
                artifacts["checkpoint"] = str(last)
        images = iters * prep.protocol["total_batch_size"] + prep.data.test_images
        return TaskResult(metrics=metrics, images=images, artifacts=artifacts)
