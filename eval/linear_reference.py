"""The reference linear probe (DINO ``eval_linear.py`` as the AttMask README runs it).

Frozen backbone in eval mode; features of the design's layer set (``cls4`` for embed dim <= 384,
``cls+avgpool`` above); one ``nn.Linear`` (weight ~ N(0, 0.01), bias 0); training images through
RandomResizedCrop(224) + horizontal flip every epoch; SGD momentum 0.9, no weight decay,
lr = 0.005 × total batch / 256 (total batch 2048 in the README run), cosine to 0 over 100 epochs
(stepped per epoch); the test split evaluated after every epoch and the best epoch reported —
model selection on the test set, recorded as ``selection: test``.

Test features come through the shared cache (the test transform is deterministic), so each
evaluation is a matrix product. Under torchrun the total batch is split over the processes and
the head's gradients are averaged. The state is saved after every epoch (``resume.py``); the
augmentation of epoch e is seeded by (seed, e), so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import transforms as T
from tqdm import tqdm

from . import distributed as dist
from .context import RunContext
from .datasets import ImageIndex
from .errors import BadInput
from .features import ImageListDataset, autocast_for, forward_layers
from .linear_heads import cosine_factor, feature_views, flush_denormal
from .resume import epoch_rng, load_state, micro_batch_size, save_state, state_path
from .transforms import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS, EvalTransform

log = logging.getLogger(__name__)

REFERENCE_BASE_LR = 0.005
REFERENCE_TRAIN_BATCH = 2048
REFERENCE_EPOCHS = 100


@dataclass(frozen=True)
class TrainTransform:
    """RandomResizedCrop(``crop``) + horizontal flip + normalise (DINO's linear-probe training transform)."""

    crop: int = 224
    interpolation: str = "bilinear"  # torchvision's RandomResizedCrop default, as DINO uses it
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def build(self) -> T.Compose:
        return T.Compose([
            T.RandomResizedCrop(self.crop, interpolation=INTERPOLATIONS[self.interpolation]),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(self.mean, self.std),
        ])


@dataclass(frozen=True)
class ReferenceSettings:
    layers: str
    epochs: int
    base_lr: float
    train_batch_size: int  # total over processes
    eval_freq: int
    seed: int

    @property
    def lr(self) -> float:
        return self.base_lr * self.train_batch_size / 256.0


def feature_dim(embed_dim: int, layers: str) -> int:
    view = feature_views(embed_dim)[layers]
    return view.stop - view.start


def head_accuracy(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, device: torch.device,
                  chunk: int = 8192) -> tuple[float, float]:
    """Top-1 and top-5 (k capped at C) in percent of ``head`` on ``features`` [N, D] / ``labels`` [N]."""
    top1 = top5 = 0
    with torch.no_grad():
        for start in range(0, len(features), chunk):
            logits = head(features[start:start + chunk].to(device).float())
            y = labels[start:start + chunk].to(device)
            ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1 += int((ranked[:, 0] == y).sum())
            top5 += int((ranked == y[:, None]).any(dim=1).sum())
    n = max(len(features), 1)
    return 100.0 * top1 / n, 100.0 * top5 / n


def _frozen_features(model: nn.Module, images: torch.Tensor, layers: str, device: torch.device) -> torch.Tensor:
    with torch.no_grad(), autocast_for(device):
        return forward_layers(model, images.to(device, non_blocking=True), layers).float()


def _train_epoch(model: nn.Module, head: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader,
                 sampler: DistributedSampler, settings: ReferenceSettings, epoch: int, micro_per_step: int,
                 ctx: RunContext) -> tuple[float, int]:
    """One epoch of SGD on the head; returns (sum of step losses, number of steps).

    The loader yields micro-batches in sampler order; ``micro_per_step`` consecutive ones make one
    step (the last step of an epoch may be shorter, as the reference's ``drop_last=False``).
    """
    device = ctx.device
    sampler.set_epoch(epoch)
    for group in opt.param_groups:  # CosineAnnealingLR(T_max=epochs, eta_min=0), stepped per epoch
        group["lr"] = settings.lr * cosine_factor(epoch, settings.epochs)
    head.train()
    loss_sum, steps = 0.0, 0
    feats: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    bar = tqdm(loader, desc=f"linear epoch {epoch + 1}/{settings.epochs}", unit="batch", leave=False,
               disable=not dist.is_main())
    for i, (images, labels, _pos) in enumerate(bar):
        feats.append(_frozen_features(model, images, settings.layers, device))
        targets.append(labels.to(device))
        ctx.images_seen += len(images)
        if len(feats) < micro_per_step and i + 1 < len(loader):
            continue
        loss = F.cross_entropy(head(torch.cat(feats)), torch.cat(targets))
        feats, targets = [], []
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if dist.world_size() > 1:
            for p in head.parameters():
                assert p.grad is not None
                dist.all_reduce_mean(p.grad)
        opt.step()
        loss_sum += float(loss.detach())
        steps += 1
    return loss_sum, steps


def train_reference_probe(ctx: RunContext, train: ImageIndex, test: ImageIndex, eval_transform: EvalTransform,
                          train_transform: TrainTransform, settings: ReferenceSettings, *, task: str,
                          dataset: str, protocol: dict[str, Any], micro_batch: int) -> dict[str, Any]:
    """Train the reference probe; returns ``{"top1", "top5", "best_epoch", "history"}`` (percent).

    At most ``micro_batch`` images (``--batch-size``; see ``micro_batch_size``) are loaded and go
    through the backbone at once; one SGD step uses ``settings.train_batch_size`` images over all
    processes, exactly as one large batch would (the backbone is frozen and has no batch statistics).
    """
    device = ctx.device
    bb = ctx.backbone()
    model = bb.model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    num_classes = len(train.classes)
    test_fs = ctx.features(test, eval_transform, settings.layers)
    test_x, test_y = torch.from_numpy(test_fs.features), torch.from_numpy(test_fs.labels)

    gen = torch.Generator().manual_seed(settings.seed)
    head = nn.Linear(feature_dim(bb.info.arch.embed_dim, settings.layers), num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    head = head.to(device)
    opt = torch.optim.SGD(head.parameters(), lr=settings.lr, momentum=0.9, weight_decay=0.0)

    path = state_path(ctx.out, task, dataset, protocol)
    state = load_state(path, protocol, bb.info.sha256)
    start, best, history = 0, {"epoch": -1, "top1": -1.0, "top5": 0.0}, []
    if state is not None:
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        start, best, history = int(state["epoch"]), dict(state["best"]), list(state["history"])

    world, rank = dist.world_size(), dist.rank()
    if settings.train_batch_size % world:
        raise BadInput(None, f"--train-batch-size {settings.train_batch_size} is not divisible by the "
                             f"{world} processes")
    ds = ImageListDataset(train, train_transform)  # type: ignore[arg-type]  # duck-typed transform spec
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=settings.seed)
    per_process = settings.train_batch_size // world
    micro = micro_batch_size(per_process, micro_batch)
    loader = DataLoader(ds, batch_size=micro, sampler=sampler, num_workers=ctx.num_workers,
                        pin_memory=device.type == "cuda", drop_last=False)
    for epoch in range(start, settings.epochs):
        with epoch_rng(settings.seed, epoch, device), flush_denormal():  # same crops after a resume
            loss_sum, steps = _train_epoch(model, head, opt, loader, sampler, settings, epoch, per_process // micro,
                                           ctx)
        head.eval()
        entry: dict[str, Any] = {"epoch": epoch + 1, "loss": loss_sum / max(steps, 1)}
        if (epoch + 1) % settings.eval_freq == 0 or epoch + 1 == settings.epochs:
            top1, top5 = head_accuracy(head, test_x, test_y, device)
            entry.update(top1=top1, top5=top5)
            if top1 > best["top1"]:
                best = {"epoch": epoch + 1, "top1": top1, "top5": top5}
            log.info("linear epoch %d: loss %.4f, test top1 %.2f (best %.2f at epoch %d)", epoch + 1,
                     entry["loss"], top1, best["top1"], best["epoch"])
        history.append(entry)
        save_state(path, {"epoch": epoch + 1, "head": head.state_dict(), "optimizer": opt.state_dict(),
                          "best": best, "history": history}, protocol, bb.info.sha256)
    return {"top1": best["top1"], "top5": best["top5"], "best_epoch": best["epoch"], "history": history}
