"""``attmask-eval finetune``: end-to-end fine-tuning with the DeiT recipe (``finetune_recipe.py``).

The backbone from ``--ckpt`` gets a new linear head on the CLS token (timm init) and drop-path;
its position embedding is resampled (bicubic) to the fine-tuning grid once, as the reference
does. Training runs on one CPU, one GPU (AMP fp16 with loss scaling) or several processes under
torchrun (DDP; the test split is evaluated in shards and the counts summed). One optimiser step
uses ``--train-batch-size`` images over all processes, loaded and forwarded in micro-batches of
at most ``--batch-size`` (``resume.micro_batch_size``; even with mixup) with gradient
accumulation (exact: a ViT has no batch statistics); mixup / cutmix mix within each micro-batch,
as the reference mixes within each GPU's batch of 150, so the micro-batch is part of the protocol.
The state is saved after every epoch and a rerun of the same command resumes (``resume.py``).

Metrics (percent): ``top1_best`` (best evaluated epoch, model selection on the test split as
the reference) and ``top1_last`` (after the last epoch); ``<record>.history.json`` lists every
evaluation (and the EMA model's accuracy at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
from dataclasses import asdict, replace
from typing import Any

import torch
import torch.distributed as td
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from . import distributed as dist
from . import records
from .arch import build_vit, resample_pos_embed
from .atomic import atomic_write_json
from .classification_options import add_classification_arguments, plan_classification, resolve_classification
from .context import RunContext
from .datasets import ImageIndex
from .errors import BadInput, TaskFailed
from .features import ImageListDataset, autocast_for
from .finetune_recipe import FinetuneRecipe, criterion, mixup_fn, optimizer, scheduler, train_transform
from .linear_heads import flush_denormal
from .resume import epoch_rng, load_state, micro_batch_size, save_state, state_path
from .tasks import Plan, Task, TaskResult
from .transforms import EvalTransform

log = logging.getLogger(__name__)

REFERENCE = FinetuneRecipe()


def build_classifier(ctx: RunContext, num_classes: int, size: int, drop_path: float) -> nn.Module:
    """The loaded backbone as a timm ViT classifier at ``size`` px (new head, drop-path, pos_embed resampled)."""
    bb = ctx.backbone()
    spec = replace(bb.info.arch, img_size=size)
    model = build_vit(spec, drop_path_rate=drop_path, num_classes=num_classes)
    sd = dict(bb.model.state_dict())
    grid = size // spec.patch_size
    prefix = 0 if spec.no_embed_class else spec.num_prefix_tokens
    sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], (grid, grid), prefix)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if set(missing) != {"head.weight", "head.bias"} or unexpected:
        raise RuntimeError(f"fine-tuning model keys differ from the backbone: missing {sorted(missing)}, "
                           f"unexpected {sorted(unexpected)}")
    log.info("fine-tuning %s at %d px: new head.weight, head.bias (%d classes)", spec.name, size, num_classes)
    return model


def evaluate(model: nn.Module, index: ImageIndex, transform: EvalTransform, device: torch.device,
             batch_size: int, num_workers: int, amp: bool = True) -> tuple[float, float]:
    """Top-1 / top-5 (k capped at C) in percent over the whole ``index``; shards summed under torchrun;
    fp16 autocast on CUDA unless ``amp`` is false (``--no-amp``: fp32 throughout)."""
    positions = list(range(dist.rank(), len(index), dist.world_size()))
    loader = DataLoader(ImageListDataset(index, transform, positions), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    counts = torch.zeros(3, dtype=torch.float64, device=device)
    model.eval()
    with torch.no_grad(), autocast_for(device, amp):
        for images, labels, _ in loader:
            logits = model(images.to(device, non_blocking=True)).float()
            y = labels.to(device)
            ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
            counts[0] += (ranked[:, 0] == y).sum()
            counts[1] += (ranked == y[:, None]).any(dim=1).sum()
            counts[2] += len(y)
    if dist.is_dist():
        td.all_reduce(counts)
    return float(100.0 * counts[0] / counts[2]), float(100.0 * counts[1] / counts[2])


class FinetuneTask(Task):
    name = "finetune"
    help = "fine-tune the whole backbone with the DeiT recipe (AttMask's CIFAR-10/100 setting)"
    description = ("Fine-tuning with the DeiT recipe through timm (RandAugment, mixup/cutmix, label smoothing, random "
                   "erasing, drop-path, model EMA, optional layer-wise lr decay) at AttMask's README settings: 500 "
                   "epochs, lr 7.5e-6 x batch / 512 at batch 900, 224 px, cosine; AMP on GPU, DDP under torchrun, "
                   "resumable. Metrics top1_best, top1_last.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_classification_arguments(parser)
        r = REFERENCE
        g = parser.add_argument_group("fine-tuning (defaults: the AttMask README run)")
        g.add_argument("--epochs", type=int, default=r.epochs, help=f"epochs (default: {r.epochs})")
        g.add_argument("--train-batch-size", type=int, default=r.train_batch_size, metavar="N",
                       help=f"images per optimiser step over all processes (default: {r.train_batch_size})")
        g.add_argument("--lr", type=float, default=r.base_lr, help="base lr, times total batch / 512 (default: 7.5e-6)")
        g.add_argument("--weight-decay", type=float, default=r.weight_decay, help="AdamW weight decay (default: 0.05)")
        g.add_argument("--warmup-epochs", type=int, default=r.warmup_epochs, help="warm-up epochs (default: 5)")
        g.add_argument("--min-lr", type=float, default=r.min_lr, help="cosine floor (default: 1e-5)")
        g.add_argument("--aa", default=r.auto_augment, metavar="POLICY",
                       help="timm RandAugment policy, or 'none' (default: rand-m9-mstd0.5-inc1)")
        g.add_argument("--reprob", type=float, default=r.random_erase, help="random-erasing probability (default: 0.25)")
        g.add_argument("--mixup", type=float, default=r.mixup, help="mixup alpha, 0 = off (default: 0.8)")
        g.add_argument("--cutmix", type=float, default=r.cutmix, help="cutmix alpha, 0 = off (default: 1.0)")
        g.add_argument("--smoothing", type=float, default=r.label_smoothing, help="label smoothing (default: 0.1)")
        g.add_argument("--drop-path", type=float, default=r.drop_path, help="drop-path rate (default: 0.1)")
        g.add_argument("--no-model-ema", dest="model_ema", action="store_false", help="do not keep an EMA model")
        g.add_argument("--model-ema-decay", type=float, default=r.model_ema_decay, help="EMA decay (default: 0.99996)")
        g.add_argument("--no-repeated-aug", dest="repeated_aug", action="store_false",
                       help="plain shuffling instead of 3x repeated augmentation")
        g.add_argument("--layer-decay", type=float, default=None, help="layer-wise lr decay (default: off)")
        g.add_argument("--eval-freq", type=int, default=r.eval_freq,
                       help="evaluate after epochs 0, N, 2N, ... (0-based) and the last (default: 50)")
        g.add_argument("--no-amp", dest="amp", action="store_false", help="fp32 on GPU too (AMP is GPU-only anyway)")

    def recipe(self, args: argparse.Namespace) -> FinetuneRecipe:
        aa = None if args.aa in (None, "none", "") else args.aa
        recipe = FinetuneRecipe(
            epochs=args.epochs, train_batch_size=args.train_batch_size, base_lr=args.lr, weight_decay=args.weight_decay,
            warmup_epochs=args.warmup_epochs, min_lr=args.min_lr, auto_augment=aa, random_erase=args.reprob,
            mixup=args.mixup, cutmix=args.cutmix, label_smoothing=args.smoothing, drop_path=args.drop_path,
            model_ema=args.model_ema, model_ema_decay=args.model_ema_decay, repeated_aug=args.repeated_aug,
            layer_decay=args.layer_decay, eval_freq=args.eval_freq, amp=args.amp)
        for flag, value in (("--epochs", recipe.epochs), ("--train-batch-size", recipe.train_batch_size),
                            ("--eval-freq", recipe.eval_freq)):
            if value < 1:
                raise BadInput(None, f"{flag} must be at least 1 (got {value})")
        world = dist.world_size()
        if recipe.train_batch_size % world:
            raise BadInput(None, f"--train-batch-size {recipe.train_batch_size} is not divisible by {world} processes")
        return recipe

    def plan(self, args: argparse.Namespace, ctx: RunContext) -> Plan:
        base = plan_classification(args, ctx)
        recipe = self.recipe(args)
        size = base.transform.crop
        reference = base.reference and recipe == replace(REFERENCE, amp=recipe.amp)
        micro = micro_batch_size(recipe.train_batch_size // dist.world_size(), args.batch_size,
                                 even=recipe.mixup_active)
        protocol = {**base.protocol, "recipe": recipe.to_dict(), "input_size": size, "micro_batch": micro,
                    "train_transform": asdict(train_transform(recipe, size)), "optimizer": "adamw",
                    "schedule": "cosine", "selection": "test", "seed": args.seed, "reference": reference}
        return Plan(dataset=base.dataset, split=base.test_split, protocol=protocol)

    def run(self, args: argparse.Namespace, ctx: RunContext, plan: Plan) -> TaskResult:
        data = resolve_classification(args, ctx)
        recipe = self.recipe(args)
        p = plan.protocol
        device = ctx.device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)  # the new head's init
            model = build_classifier(ctx, data.num_classes, p["input_size"], recipe.drop_path).to(device)
        opt = optimizer(recipe, model)
        sched = scheduler(recipe, opt)
        use_amp = recipe.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        ema = None
        if recipe.model_ema:
            from timm.utils import ModelEmaV3

            ema = ModelEmaV3(model, decay=recipe.model_ema_decay)
        bb = ctx.backbone()
        path = state_path(ctx.out, self.name, plan.dataset, p)
        state = load_state(path, p, bb.info.sha256)
        start, best, history = 0, {"epoch": -1, "top1": -1.0}, []
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            if ema is not None:
                ema.module.load_state_dict(state["ema"])
            start, best, history = int(state["epoch"]), dict(state["best"]), list(state["history"])
        train_model: nn.Module = model
        if dist.is_dist():
            train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                              else None)
        ds = ImageListDataset(data.train, train_transform(recipe, p["input_size"]))  # type: ignore[arg-type]
        world, rank = dist.world_size(), dist.rank()
        if recipe.repeated_aug:
            from timm.data.distributed_sampler import RepeatAugSampler

            sampler: Any = RepeatAugSampler(ds, num_replicas=world, rank=rank, shuffle=True, num_repeats=3)
        else:
            sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
        per_process = recipe.train_batch_size // world
        micro = p["micro_batch"]
        loader = DataLoader(ds, batch_size=micro, sampler=sampler, num_workers=ctx.num_workers,
                            pin_memory=device.type == "cuda", drop_last=True)
        if len(loader) < per_process // micro:
            raise BadInput(data.train.root, f"{len(sampler)} training images per process per epoch: fewer than one "
                                            f"step of {per_process}; lower --train-batch-size")
        mix = mixup_fn(recipe, data.num_classes)
        loss_fn = criterion(recipe)
        eval_batch = max(1, int(1.5 * args.batch_size))
        for epoch in range(start, recipe.epochs):
            sampler.set_epoch(epoch)
            sched.step(epoch)
            with epoch_rng(args.seed, epoch, device), flush_denormal():  # same augmentations after a resume
                loss = self._train_epoch(train_model, loader, opt, scaler, loss_fn, mix, ema, device,
                                         per_process // micro, epoch, recipe.epochs, use_amp)
            ctx.images_seen += len(loader) // (per_process // micro) * per_process
            entry: dict[str, Any] = {"epoch": epoch + 1, "loss": loss, "lr": opt.param_groups[0]["lr"]}
            if epoch % recipe.eval_freq == 0 or epoch + 1 == recipe.epochs:
                top1, top5 = evaluate(model, data.test, data.transform, device, eval_batch, ctx.num_workers,
                                      amp=recipe.amp)
                entry.update(top1=top1, top5=top5)
                if top1 > best["top1"]:
                    best = {"epoch": epoch + 1, "top1": top1}
                log.info("finetune epoch %d: loss %.4f, test top1 %.2f (best %.2f)", epoch + 1, loss, top1, best["top1"])
            history.append(entry)
            save_state(path, {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                              "scaler": scaler.state_dict(), "ema": ema.module.state_dict() if ema else {},
                              "best": best, "history": history}, p, bb.info.sha256)
        evaluated = [h for h in history if "top1" in h]
        last = evaluated[-1]
        result: dict[str, Any] = {"history": history, "best_epoch": best["epoch"]}
        if ema is not None:
            result["ema_top1_last"], _ = evaluate(ema.module, data.test, data.transform, device, eval_batch,
                                                  ctx.num_workers, amp=recipe.amp)
        name = records.record_stem(self.name, plan.dataset, p)
        history_name = f"{name}.history.json"
        if dist.is_main():
            atomic_write_json(ctx.file_in_out(history_name), result)
        return TaskResult(metrics={"top1_best": best["top1"], "top1_last": last["top1"]},
                          images=ctx.images_seen + len(data.test), artifacts={"history": history_name})

    @staticmethod
    def _train_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                     loss_fn: nn.Module, mix: Any, ema: Any, device: torch.device, micro_per_step: int, epoch: int,
                     epochs: int, use_amp: bool) -> float:
        """One epoch. The loader yields micro-batches in sampler order; ``micro_per_step`` consecutive
        ones are one optimiser step (gradients accumulated; a last incomplete step is dropped, as the
        reference's ``drop_last=True``); mixup / cutmix mix within each micro-batch, as the reference
        mixes within each GPU's batch."""
        model.train()
        total, steps = 0.0, 0
        full_steps = len(loader) // micro_per_step
        ddp = isinstance(model, nn.parallel.DistributedDataParallel)
        bar = tqdm(loader, desc=f"finetune epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                   total=full_steps * micro_per_step, disable=not dist.is_main())
        step_loss = 0.0
        for i, (images, labels, _) in enumerate(bar):
            if i >= full_steps * micro_per_step:
                break
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            targets = labels
            if mix is not None:
                images, targets = mix(images, labels)
            last = (i + 1) % micro_per_step == 0
            with (contextlib.nullcontext() if last or not ddp else model.no_sync()):
                with autocast_for(device, use_amp):
                    loss = loss_fn(model(images), targets) / micro_per_step
                scaler.scale(loss).backward()
            step_loss += float(loss.detach())
            if not last:
                continue
            if not math.isfinite(step_loss):
                raise TaskFailed(f"fine-tuning loss is {step_loss} at epoch {epoch + 1}; stopping")
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model.module if ddp else model)
            total += step_loss
            steps += 1
            step_loss = 0.0
        return total / max(steps, 1)


TASK = FinetuneTask()
