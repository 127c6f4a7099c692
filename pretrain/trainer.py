"""The pre-training loop: set-up, epochs, logging, online k-NN, checkpoints, exact resume.

Runs on one CPU, one GPU, or many processes under ``torchrun`` (DDP; nccl on GPU, gloo on CPU;
multi-node through torchrun's rendezvous). Every rank builds identical networks from ``seed``; the
student is wrapped in ``DistributedDataParallel``, the teacher is its EMA; centers are reduced
across ranks; rank 0 writes logs and checkpoints.

Stopping: after ``epochs`` or at global step ``max_steps`` (whichever comes first; the schedules
always span ``epochs``), always writing ``RUN_DIR/checkpoint.pth``. A non-finite loss stops the run
with :class:`TrainingDiverged` and leaves the last good checkpoint untouched.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from attmask.eval import distributed as dist
from attmask.eval.arch import ArchSpec, spec_from_name
from attmask.eval.atomic import atomic_write_text
from attmask.eval.classification_options import check_same_classes
from attmask.eval.context import peak_memory_mb
from attmask.eval.datasets import classification_split, index_image_folder
from attmask.eval.errors import BadInput
from attmask.eval.linear_heads import flush_denormal
from attmask.eval.transforms import EvalTransform

from . import checkpoints as ckpt_io
from .batch_augment import DeviceMultiCrop, load_images
from .config import RESUME_FREE_KEYS, RUN_CONFIG_NAME, LoadedConfig, PretrainConfig, dump_config
from .data import EpochSampler, MultiCropDataset, build_loader
from .heads import iBOTHead
from .losses import DINOLoss, iBOTLoss, teacher_temperature_schedule
from .network import PretrainNet
from .online_knn import KnnSetup, teacher_knn
from .optim import build_optimizer, ema_pairs, param_groups
from .runlog import RunLog, truncate_after
from .schedules import build_schedules
from .step import NonFiniteLoss, StepState, train_step
from .vit import build_backbone

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """A non-finite loss ended the run; ``str()`` names the step and the last good checkpoint."""


@dataclass
class TrainSummary:
    step: int
    epoch: int  # completed epochs
    complete: bool  # the configured number of epochs was reached
    checkpoint: Path
    last_epoch_stats: dict[str, float] = field(default_factory=dict)
    knn: dict[str, float] = field(default_factory=dict)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: ``auto`` = fp16 on CUDA (the reference's ``use_fp16``), bf16 on CPU (measured faster)."""
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "bf16"
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise BadInput(None, "precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    return torch.float16 if precision == "fp16" else torch.bfloat16


def resolve_attn_impl(impl: str, device: torch.device) -> str:
    """``auto`` = fused SDPA on CUDA, explicit attention on CPU (../shared/reference/CPU-PRETRAINING.md)."""
    if impl == "auto":
        return "fused" if device.type == "cuda" else "explicit"
    return impl


def arch_spec(cfg: PretrainConfig) -> ArchSpec:
    return spec_from_name(cfg.arch, patch_size=cfg.patch_size, img_size=cfg.global_crops_size)


def checkpoint_args(cfg: PretrainConfig, spec: ArchSpec) -> dict[str, Any]:
    """The checkpoint's ``args``: the configuration plus the architecture, as plain values."""
    return {**cfg.to_dict(), "embed_dim": spec.embed_dim, "depth": spec.depth, "num_heads": spec.num_heads,
            "img_size": spec.img_size, "arch_name": spec.name}


def build_networks(cfg: PretrainConfig, spec: ArchSpec, attn_impl: str) -> tuple[PretrainNet, PretrainNet]:
    """Student (drop-path, mask token) and teacher (its copy, no gradients), built under ``cfg.seed``."""
    patch_dim = cfg.patch_dim if cfg.loss == "ibot" else None
    head_kw = dict(hidden_dim=cfg.head_hidden_dim, bottleneck_dim=cfg.head_bottleneck_dim, nlayers=cfg.head_nlayers,
                   act=cfg.act_in_head)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        student = PretrainNet(
            build_backbone(spec, drop_path_rate=cfg.drop_path, mask_token=cfg.masks_student, attn_impl=attn_impl),
            iBOTHead(spec.embed_dim, cfg.out_dim, patch_dim, norm_last_layer=cfg.norm_last_layer,
                     shared_head=cfg.shared_head, **head_kw))
        teacher = PretrainNet(
            build_backbone(spec, drop_path_rate=0.0, mask_token=False, attn_impl=attn_impl),
            iBOTHead(spec.embed_dim, cfg.out_dim, patch_dim, norm_last_layer=True,
                     shared_head=cfg.shared_head_teacher, **head_kw))
    copy_student_to_teacher(student, teacher)
    for p in teacher.parameters():
        p.requires_grad = False
    return student, teacher


@torch.no_grad()
def copy_student_to_teacher(student: nn.Module, teacher: nn.Module) -> None:
    s, t = ema_pairs(student, teacher)
    for a, b in zip(s, t):
        b.copy_(a)


def build_loss(cfg: PretrainConfig) -> iBOTLoss | DINOLoss:
    temps = teacher_temperature_schedule(cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs,
                                         cfg.epochs)
    if cfg.loss == "dino":
        return DINOLoss(cfg.out_dim, cfg.global_crops_number, teacher_temps=temps, student_temp=cfg.student_temp,
                        center_momentum=cfg.center_momentum)
    patch_temps = teacher_temperature_schedule(cfg.warmup_teacher_patch_temp, cfg.teacher_patch_temp,
                                               cfg.warmup_teacher_temp_epochs, cfg.epochs, cfg.pred_start_epoch)
    return iBOTLoss(cfg.out_dim, cfg.patch_dim, cfg.global_crops_number, teacher_temps=temps,
                    teacher_patch_temps=patch_temps, student_temp=cfg.student_temp,
                    center_momentum=cfg.center_momentum, center_momentum2=cfg.center_momentum,
                    lambda1=cfg.lambda1, lambda2=cfg.lambda2)


def build_step_state(cfg: PretrainConfig, spec: ArchSpec, device: torch.device) -> StepState:
    """Networks (student DDP-wrapped under torchrun), loss, optimizer and grad scaler on ``device``."""
    amp_dtype = resolve_precision(cfg.precision, device)
    student_net, teacher = build_networks(cfg, spec, resolve_attn_impl(cfg.attn_impl, device))
    student_net.to(device)
    teacher.to(device).eval()
    student: nn.Module = student_net
    if dist.world_size() > 1:
        student = nn.parallel.DistributedDataParallel(
            student_net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        for net in (student_net, teacher):
            for blk in net.backbone.blocks:
                blk.compile()
    ema_s, ema_t = ema_pairs(student_net, teacher)
    return StepState(cfg=cfg, student=student, student_net=student_net, teacher=teacher,
                     loss_fn=build_loss(cfg).to(device),
                     optimizer=build_optimizer(cfg.optimizer, param_groups(student_net)),
                     scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
                     ema_student=ema_s, ema_teacher=ema_t, device=device, amp_dtype=amp_dtype, rank=dist.rank())


UNIFORM_MARGIN = 0.3  # nats below ln K
ONE_HOT_ENTROPY = 0.5  # nats


def collapse_warning(stats: dict[str, float], cfg: PretrainConfig, epochs_done: int) -> str | None:
    """A message when the teacher's CLS distribution has collapsed after the temperature warm-up: mean
    entropy within ``UNIFORM_MARGIN`` of ln K (uniform: centering dominates sharpening, the CLS loss
    stays near ln K and teaches little) or below ``ONE_HOT_ENTROPY`` (one prototype wins)."""
    entropy = stats.get("teacher_entropy")
    if entropy is None or epochs_done <= cfg.warmup_teacher_temp_epochs:
        return None
    ln_k = math.log(cfg.out_dim)
    if entropy > ln_k - UNIFORM_MARGIN:
        return (f"the teacher's CLS outputs are near uniform after epoch {epochs_done} (mean entropy {entropy:.2f} "
                f"of ln K = {ln_k:.2f}, CLS loss {stats.get('cls', float('nan')):.2f}): the CLS objective teaches "
                "little; consider a lower teacher_temp or a smaller out_dim")
    if entropy < ONE_HOT_ENTROPY:
        return (f"the teacher's CLS outputs are near one-hot after epoch {epochs_done} (mean entropy {entropy:.2f}, "
                f"max probability {stats.get('teacher_max_prob', float('nan')):.2f}): consider a higher teacher_temp")
    return None


def loss_key(cfg: PretrainConfig) -> str:
    """The checkpoint entry of the loss state, as the reference names it."""
    return "ibot_loss" if cfg.loss == "ibot" else "dino_loss"


def checkpoint_payload(st: StepState, args: dict[str, Any], step: int, iters: int, world: int,
                       total_steps: int) -> dict[str, Any]:
    """The checkpoint dict (reference layout + our ``attmask`` entry), every tensor copied to CPU."""
    payload: dict[str, Any] = {
        "student": ckpt_io.prefixed(ckpt_io.cpu_state(st.student_net.state_dict()), "module."),
        "teacher": ckpt_io.cpu_state(st.teacher.state_dict()),
        "optimizer": ckpt_io.cpu_state(st.optimizer.state_dict()),
        "epoch": step // iters,
        "args": args,
        loss_key(st.cfg): ckpt_io.cpu_state(st.loss_fn.state_dict()),
        "attmask": {"version": ckpt_io.FORMAT_VERSION, "step": step, "epoch": step // iters,
                    "iters_per_epoch": iters, "world_size": world, "complete": step >= total_steps},
    }
    if st.scaler is not None:
        payload["fp16_scaler"] = st.scaler.state_dict()
    return payload


class Trainer:
    """``Trainer(config, out).run()`` pre-trains and returns a :class:`TrainSummary`."""

    def __init__(self, config: LoadedConfig | PretrainConfig, out: str | os.PathLike[str], *, resume: bool = False,
                 max_steps: int | None = None, progress: bool = True, device: str | None = None) -> None:
        self.cfg = config.config if isinstance(config, LoadedConfig) else config
        self.reference = config.reference if isinstance(config, LoadedConfig) else False
        self.out = Path(out)
        self.resume = resume
        self.max_steps = max_steps
        self.progress = progress
        self.device_name = device
        if self.out.exists() and not self.out.is_dir():
            raise BadInput(self.out, "--out must be a folder, and this is a file")
        if max_steps is not None and max_steps < 1:
            raise BadInput(None, f"--max-steps {max_steps}: give a positive number of iterations")
        self.final_state: dict[str, dict[str, torch.Tensor]] = {}

    # -- set-up -----------------------------------------------------------------------------------
    def _data(self, cfg: PretrainConfig) -> tuple[Any, KnnSetup | None]:
        if cfg.dataset is None and cfg.data_path is None:
            raise BadInput(None, "no training data: set dataset=NAME or data_path=DIR")
        subset = cfg.subset if cfg.subset > 0 else None
        train_dir, _ = classification_split(cfg.dataset, cfg.data_path, cfg.train_split, "train")
        train_index = index_image_folder(train_dir, subset)
        knn = None
        if cfg.eval_every > 0:
            if max(cfg.nb_knn) > len(train_index) or min(cfg.nb_knn) < 1:
                raise BadInput(None, f"nb_knn {cfg.nb_knn}: every k must be in 1..{len(train_index)} "
                                     f"(the k-NN bank is the {len(train_index)} training images)")
            val_dir, _ = classification_split(cfg.dataset, cfg.data_path, cfg.val_split, "test")
            val_index = index_image_folder(val_dir)
            check_same_classes(train_index, val_index)  # labels are class positions
            knn = KnnSetup(train=train_index, val=val_index,
                           transform=EvalTransform(resize=cfg.knn_resize, crop=cfg.knn_crop),
                           ks=tuple(cfg.nb_knn), temperature=cfg.knn_temperature, batch_size=cfg.knn_batch_size,
                           num_workers=cfg.num_workers)
        return train_index, knn

    def _check_resume(self, saved: dict[str, Any], path: Path) -> None:
        args = saved["args"]
        diff = sorted(k for k, v in self.cfg.to_dict().items()
                      if k not in RESUME_FREE_KEYS and k in args and args[k] != v)
        if diff:
            shown = ", ".join(f"{k}: {args[k]!r} -> {getattr(self.cfg, k)!r}" for k in diff[:4])
            raise BadInput(path, f"cannot resume exactly: the configuration differs ({shown}"
                                 f"{', …' if len(diff) > 4 else ''})")

    def _restore(self, st: StepState, latest: Path, iters: int, world: int) -> int:
        """Load ``latest`` into the networks, optimizer, centers and scaler; returns the global step."""
        saved = ckpt_io.read_training_checkpoint(latest)
        self._check_resume(saved, latest)
        meta = saved["attmask"]
        if meta.get("iters_per_epoch") != iters or meta.get("world_size") != world:
            raise BadInput(latest, f"cannot resume exactly: saved with {meta.get('world_size')} process(es) and "
                                   f"{meta.get('iters_per_epoch')} iterations per epoch, now {world} and {iters}")
        st.student_net.load_state_dict(ckpt_io.unprefixed(saved["student"], "module."))
        st.teacher.load_state_dict(saved["teacher"])
        st.optimizer.load_state_dict(saved["optimizer"])
        st.loss_fn.load_state_dict(saved[loss_key(self.cfg)])
        if st.scaler is not None and saved.get("fp16_scaler") is not None:
            st.scaler.load_state_dict(saved["fp16_scaler"])
        step = int(meta["step"])
        if dist.is_main():
            truncate_after(self.out, step)
        log.info("resuming %s at step %d (epoch %d)", latest, step, step // iters)
        return step

    def run(self) -> TrainSummary:
        device = dist.init_from_env(self.device_name)
        # denormals caused 2-3x slowdowns on CPU; the previous mode is restored on return
        with flush_denormal() if device.type == "cpu" else contextlib.nullcontext():
            return self._run(device)

    def _run(self, device: torch.device) -> TrainSummary:
        cfg = self.cfg
        rank, world = dist.rank(), dist.world_size()
        latest = self.out / ckpt_io.LATEST
        if not self.resume and latest.exists():
            raise BadInput(latest, "this run folder already holds a checkpoint: pass --resume to continue it, "
                                   "or choose another --out")
        if self.resume and not latest.is_file():
            raise BadInput(latest, "--resume: no checkpoint to resume from")
        train_index, knn = self._data(cfg)
        spec = arch_spec(cfg)
        st = build_step_state(cfg, spec, device)
        student_net, teacher, loss_fn = st.student_net, st.teacher, st.loss_fn
        attn_impl = resolve_attn_impl(cfg.attn_impl, device)
        dataset = MultiCropDataset(train_index, cfg)
        if cfg.augment_on == "device":
            t0 = time.perf_counter()
            images = load_images(train_index).to(device)
            st.augmenter = DeviceMultiCrop(images, cfg)
            log.info("augment_on=device: %d images (%dx%d px) decoded onto %s in %.1f s", images.shape[0],
                     images.shape[3], images.shape[2], device, time.perf_counter() - t0)
        sampler = EpochSampler(len(dataset), cfg.batch_size_per_gpu, seed=cfg.seed, rank=rank, world_size=world)
        iters = sampler.iters_per_epoch
        sched = build_schedules(lr=cfg.lr, min_lr=cfg.min_lr, warmup_epochs=cfg.warmup_epochs,
                                weight_decay=cfg.weight_decay, weight_decay_end=cfg.weight_decay_end,
                                momentum_teacher=cfg.momentum_teacher, epochs=cfg.epochs, iters_per_epoch=iters,
                                total_batch=cfg.batch_size_per_gpu * world)
        step = self._restore(st, latest, iters, world) if self.resume else 0
        loader = build_loader(dataset, sampler, num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
        runlog = RunLog(self.out, enabled=dist.is_main(), tensorboard=cfg.tensorboard)
        if dist.is_main():  # what this run trains with (on --resume: with its current loader / logging keys)
            atomic_write_text(self.out / RUN_CONFIG_NAME, dump_config(cfg, self.reference))
        args = checkpoint_args(cfg, spec)
        total = sched.total_steps if self.max_steps is None else min(self.max_steps, sched.total_steps)

        def save(step_now: int, epoch_file: int | None = None) -> Path:
            if dist.is_main():  # only rank 0 writes: only it copies the state
                payload = checkpoint_payload(st, args, step_now, iters, world, sched.total_steps)
                ckpt_io.save_checkpoint(latest, payload)
                if epoch_file is not None:
                    ckpt_io.save_checkpoint(self.out / ckpt_io.epoch_checkpoint_name(epoch_file), payload)
            dist.barrier()
            return latest

        summary = TrainSummary(step=step, epoch=step // iters, complete=step >= sched.total_steps, checkpoint=latest)

        def evaluate(step_now: int, epochs_done: int) -> dict[str, float]:
            metrics = teacher_knn(teacher.backbone, knn, device)
            runlog.write("eval", step_now, {"epoch": epochs_done, **metrics})
            log.info("epoch %d: teacher k-NN %s", epochs_done,
                     ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k.startswith("top1")))
            return metrics

        log.info("pre-training %s (%s, %s masking, %s loss) on %d images: %d epochs x %d iterations, batch %d x %d, "
                 "%s, %s attention", spec.name, device, cfg.pred_shape, cfg.loss, len(dataset), cfg.epochs, iters,
                 cfg.batch_size_per_gpu, world, st.amp_dtype or "fp32", attn_impl)
        try:
            if knn is not None and step == 0:
                summary.knn = evaluate(0, 0)  # the initialisation: the curve's starting point
            warned = False
            while step < total:
                epoch, skip = divmod(step, iters)
                sampler.set_epoch(epoch, skip)
                sums: dict[str, float] = defaultdict(float)
                count = 0
                window_t, window_n = time.perf_counter(), 0
                bar = tqdm(total=iters, initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="it",
                           disable=not (self.progress and dist.is_main()), leave=False, dynamic_ncols=True)
                for batch in loader:
                    try:
                        values = train_step(st, batch, step=step, epoch=epoch, lr=float(sched.lr[step]),
                                            wd=float(sched.weight_decay[step]), momentum=float(sched.momentum[step]))
                    except NonFiniteLoss as exc:
                        runlog.write("stop", step, {"reason": "non-finite loss", "epoch": epoch})
                        good = f"last good checkpoint: {latest}" if latest.exists() else "no checkpoint was written"
                        raise TrainingDiverged(f"{exc}; the run stopped ({good})") from None
                    step += 1
                    count += 1
                    window_n += 1
                    for k, v in values.items():
                        sums[k] += v
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['loss']:.3f}", refresh=False)
                    if step % cfg.log_every == 0:
                        now = time.perf_counter()
                        ips = window_n * cfg.batch_size_per_gpu * world / max(now - window_t, 1e-9)
                        window_t, window_n = now, 0
                        runlog.write("train", step, {"epoch": epoch, **values, "lr": float(sched.lr[step - 1]),
                                                     "wd": float(sched.weight_decay[step - 1]),
                                                     "momentum": float(sched.momentum[step - 1]),
                                                     "images_per_s": ips, "mem_mb": peak_memory_mb(device)})
                    if step >= total:
                        break
                bar.close()
                epoch_done = step % iters == 0
                stats = {k: v / max(count, 1) for k, v in sums.items()}
                summary.last_epoch_stats = stats
                if epoch_done:
                    runlog.write("epoch", step, {"epoch": epoch + 1, **stats})
                    warning = collapse_warning(stats, cfg, epoch + 1)
                    if warning and not warned:
                        warned = True  # once per run; the epoch entries keep the numbers
                        log.warning(warning)
                        runlog.write("warning", step, {"epoch": epoch + 1, "message": warning})
                    if knn is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch == cfg.epochs - 1):
                        summary.knn = evaluate(step, epoch + 1)
                    keep = cfg.saveckp_freq and epoch % cfg.saveckp_freq == 0 and epoch
                    save(step, epoch if keep else None)
                    log.info("epoch %d/%d: loss %.4f (cls %.4f, patch %.4f)", epoch + 1, cfg.epochs,
                             stats.get("loss", float("nan")), stats.get("cls", float("nan")),
                             stats.get("patch", float("nan")))
                elif step >= total:
                    save(step)
            if self.max_steps is not None and step < sched.total_steps:
                runlog.write("stop", step, {"reason": "max-steps", "epoch": step // iters})
        finally:
            runlog.close()
        summary.step, summary.epoch, summary.complete = step, step // iters, step >= sched.total_steps
        # what this process holds at the end (every rank; rank 0 also wrote it to the checkpoint)
        self.final_state = {"student": ckpt_io.cpu_state(student_net.state_dict()),
                            "teacher": ckpt_io.cpu_state(teacher.state_dict()),
                            "loss": ckpt_io.cpu_state(loss_fn.state_dict())}
        return summary
