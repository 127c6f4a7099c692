"""The ``pretrain`` task: suites pre-train a backbone, then evaluate ``RUN_DIR/checkpoint.pth``.

``attmask-eval pretrain --config PRESET|PATH --out RUN_DIR [--epochs N] [--max-steps N] [KEY=VALUE ...]``
trains into RUN_DIR exactly as ``attmask-pretrain train`` does, resuming a checkpoint already there
(so an interrupted suite picks up where it stopped; a finished run is not trained again), and
writes the record ``pretrain-<dataset>-<hash>.json``:

- ``metrics``: ``loss``, ``loss_cls``, ``loss_patch`` (nats, means over the last epoch run),
  ``teacher_entropy``, and the teacher's final online k-NN in percent (``knn_top1@k20`` ...) when
  the configuration evaluates (``eval_every`` > 0);
- ``protocol``: the full configuration, ``max_steps``, and ``reference`` (true only for a shipped
  reference preset run unchanged to its last epoch);
- ``inputs``: the configuration file; ``artifacts``: ``{"checkpoint": "checkpoint.pth"}``.

It is a scoring-style task (no ``--ckpt``: it makes the checkpoint), so ``checkpoint`` is null.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from attmask.eval.checkpoint import sha256_file
from attmask.eval.errors import TaskFailed
from attmask.eval.tasks import Plan, Task, TaskResult

from .checkpoints import LATEST, read_training_checkpoint
from .config import LoadedConfig, load_config, parse_overrides

if TYPE_CHECKING:
    from attmask.eval.context import RunContext

log = logging.getLogger(__name__)


def _loaded(args: argparse.Namespace) -> LoadedConfig:
    overrides = parse_overrides(list(args.overrides or []))
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    return load_config(args.config, overrides)


class PretrainTask(Task):
    name = "pretrain"
    help = "pre-train a ViT with AttMask / baseline masking (iBOT or DINO) into RUN_DIR/checkpoint.pth"
    description = __doc__
    uses_backbone = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("pre-training")
        g.add_argument("--config", required=True, metavar="PRESET|PATH",
                       help="a shipped preset (configs/pretrain/) or a YAML file")
        g.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
        g.add_argument("--max-steps", type=int, default=None, metavar="N",
                       help="stop at global iteration N (the schedules still span the epochs)")
        g.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
        g.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="option overrides (YAML values)")

    def plan(self, args: argparse.Namespace, ctx: RunContext) -> Plan:
        loaded = _loaded(args)
        cfg = loaded.config
        dataset = getattr(args, "dataset_name", None) or cfg.dataset or Path(cfg.data_path or "data").resolve().name
        protocol = {**cfg.to_dict(), "max_steps": args.max_steps,
                    "reference": loaded.reference and args.max_steps is None}
        return Plan(dataset=dataset, split=cfg.train_split or "train", protocol=protocol)

    def run(self, args: argparse.Namespace, ctx: RunContext, plan: Plan) -> TaskResult:
        from .trainer import Trainer, TrainingDiverged

        loaded = _loaded(args)
        latest = ctx.out / LATEST
        resume = latest.is_file()
        if resume:
            log.info("pretrain: %s exists, resuming it", latest)
        try:
            summary = Trainer(loaded, ctx.out, resume=resume, max_steps=args.max_steps, progress=True,
                              device=getattr(args, "device", None)).run()
        except TrainingDiverged as exc:
            raise TaskFailed(str(exc)) from None
        stats = summary.last_epoch_stats
        if not stats:  # nothing left to train: report what the checkpoint's run logged
            from .runlog import read_log

            epochs = read_log(ctx.out, "epoch")
            stats = epochs[-1] if epochs else {}
        metrics = {name: float(stats[key]) for name, key in
                   (("loss", "loss"), ("loss_cls", "cls"), ("loss_patch", "patch"),
                    ("teacher_entropy", "teacher_entropy")) if key in stats}
        knn = summary.knn
        if not knn:
            from .runlog import read_log

            evals = read_log(ctx.out, "eval")
            knn = {k: v for k, v in evals[-1].items() if "@" in k} if evals else {}
        metrics.update({f"knn_{k}": float(v) for k, v in knn.items()})
        if not metrics:
            raise TaskFailed(f"{latest}: the run logged no statistics")
        read_training_checkpoint(latest)  # the file we hand to the suite loads
        return TaskResult(metrics=metrics, images=summary.step * loaded.config.batch_size_per_gpu,
                          inputs=[{"path": str(loaded.path.resolve()), "sha256": sha256_file(loaded.path)}],
                          artifacts={"checkpoint": LATEST})


TASK = PretrainTask()
