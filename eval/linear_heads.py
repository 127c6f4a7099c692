"""Many linear classifiers trained together on fixed features (the fast linear-probe sweep).

DINOv2's linear evaluation (``dinov2/eval/linear.py``) trains one head per (feature set, learning
rate) on a single frozen forward pass and keeps the best. Here the features are already cached,
so every head of a sweep sees the same mini-batches in one pass: the heads that read the same
feature set are one tensor ``W [H, D, C]`` and one batched matrix product, and plain SGD with
momentum (as ``torch.optim.SGD``: weight decay added to the gradient, buffer ``b = m b + g``,
step ``-lr b``) runs on all of them at once with a learning rate and weight decay per head.

Heads are initialised as the reference ``LinearClassifier`` (weight ~ N(0, 0.01), bias 0);
the learning rate follows a cosine from its base value to 0 over the iterations (DINOv2's
``CosineAnnealingLR`` per iteration). Weight decay applies to the weights, not the biases.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from tqdm import tqdm

# Feature sets that are slices of the ``cls4+avgpool`` layer set [N, 5D]:
# [CLS of block L-4 | L-3 | L-2 | L-1 | mean patch token of block L-1].
FEATURE_SETS = ("cls", "cls4", "avgpool", "cls+avgpool", "cls4+avgpool")


def feature_views(embed_dim: int) -> dict[str, slice]:
    """Column slices of a ``cls4+avgpool`` feature [N, 5D] that give each feature set."""
    d = embed_dim
    return {"cls": slice(3 * d, 4 * d), "cls4": slice(0, 4 * d), "avgpool": slice(4 * d, 5 * d),
            "cls+avgpool": slice(3 * d, 5 * d), "cls4+avgpool": slice(0, 5 * d)}


@dataclass(frozen=True)
class HeadConfig:
    """One head of a sweep: which features it reads, its learning rate and its weight decay."""

    feature_set: str
    lr: float
    weight_decay: float

    def to_dict(self) -> dict[str, float | str]:
        return {"feature_set": self.feature_set, "lr": self.lr, "weight_decay": self.weight_decay}


@dataclass
class HeadBank:
    """Heads grouped by feature set; ``groups[f]`` lists the positions in ``configs`` of group ``f``."""

    configs: list[HeadConfig]
    views: dict[str, slice]
    weights: dict[str, torch.Tensor]  # f -> [H_f, D_f, C]
    biases: dict[str, torch.Tensor]  # f -> [H_f, C]
    groups: dict[str, list[int]]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Scores [H, B, C] of every head (in ``configs`` order) for features ``x`` [B, D_all]."""
        out = torch.empty(len(self.configs), x.shape[0], self.num_classes, device=x.device)
        for f, positions in self.groups.items():
            xf = x[:, self.views[f]]
            out[positions] = torch.einsum("bd,hdc->hbc", xf, self.weights[f]) + self.biases[f][:, None, :]
        return out

    @property
    def num_classes(self) -> int:
        return next(iter(self.biases.values())).shape[1]


def init_heads(configs: Sequence[HeadConfig], views: Mapping[str, slice], num_classes: int,
               generator: torch.Generator, device: torch.device | str = "cpu") -> HeadBank:
    """Weights ~ N(0, 0.01) drawn on the CPU from ``generator`` (reproducible on any device), biases 0."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        if c.feature_set not in views:
            raise ValueError(f"unknown feature set {c.feature_set!r} (have {', '.join(views)})")
        groups.setdefault(c.feature_set, []).append(i)
    weights, biases = {}, {}
    for f, positions in groups.items():
        dim = views[f].stop - views[f].start
        w = torch.randn(len(positions), dim, num_classes, generator=generator) * 0.01
        weights[f] = w.to(device).requires_grad_(True)
        biases[f] = torch.zeros(len(positions), num_classes, device=device, requires_grad=True)
    return HeadBank(configs=list(configs), views=dict(views), weights=weights, biases=biases, groups=groups)


def cosine_factor(step: int, total: int) -> float:
    """Cosine decay from 1 at step 0 to 0 at ``total`` (``CosineAnnealingLR`` with ``eta_min = 0``)."""
    return 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))


def batch_indices(n: int, batch_size: int, iterations: int, generator: torch.Generator):
    """Mini-batch index tensors: consecutive slices of per-epoch permutations (full batches only)."""
    batch_size = min(batch_size, n)
    perm = torch.randperm(n, generator=generator)
    pos = 0
    for _ in range(iterations):
        if pos + batch_size > n:
            perm = torch.randperm(n, generator=generator)
            pos = 0
        yield perm[pos:pos + batch_size]
        pos += batch_size


def denormals_flushed() -> bool:
    """Whether this thread currently flushes denormal floats to zero (torch has no getter)."""
    return (torch.tensor([5e-324], dtype=torch.float64) * 1.0).item() == 0.0


@contextmanager
def flush_denormal() -> Iterator[None]:
    """Treat denormal floats as zero on the CPU while training (tiny softmax tails and momentum
    buffers otherwise slow x86 arithmetic down by an order of magnitude); the previous mode is
    restored afterwards."""
    previous = denormals_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(previous)


def train_heads(features: torch.Tensor, labels: torch.Tensor, configs: Sequence[HeadConfig],
                views: Mapping[str, slice], *, num_classes: int, iterations: int, batch_size: int,
                generator: torch.Generator, momentum: float = 0.9, device: torch.device | str = "cpu",
                rows: torch.Tensor | None = None, progress: bool = False) -> HeadBank:
    """Train every head of ``configs`` on ``features`` [N, D_all] / ``labels`` [N] in one pass.

    ``rows`` (int64 [M]) restricts training to those rows without copying the features (ImageNet's
    ``cls4+avgpool`` features of ViT-S are 9.8 GB).

    Each iteration draws one mini-batch (shared by all heads), computes the sum over heads of each
    head's mean cross-entropy (so every head gets exactly its own gradient) and takes one SGD step
    per head with ``lr_h * cosine(t)``. ``features`` may stay on the CPU; batches move to ``device``.
    """
    device = torch.device(device)
    bank = init_heads(configs, views, num_classes, generator, device)
    groups = list(bank.groups)
    lrs = {f: torch.tensor([configs[i].lr for i in bank.groups[f]], device=device) for f in groups}
    wds = {f: torch.tensor([configs[i].weight_decay for i in bank.groups[f]], device=device) for f in groups}
    w_buf = {f: torch.zeros_like(bank.weights[f]) for f in groups}
    b_buf = {f: torch.zeros_like(bank.biases[f]) for f in groups}
    labels = labels.long()
    n = len(features) if rows is None else len(rows)
    steps = tqdm(batch_indices(n, batch_size, iterations, generator), total=iterations,
                 desc="linear heads", unit="it", disable=not progress, leave=False)
    with flush_denormal():
        for step, idx in enumerate(steps):
            if rows is not None:
                idx = rows[idx]
            x = features[idx].to(device, non_blocking=True).float()
            y = labels[idx].to(device, non_blocking=True)
            loss = x.new_zeros(())
            for f in groups:
                w, b = bank.weights[f], bank.biases[f]
                w.grad = b.grad = None
                logits = torch.einsum("bd,hdc->hbc", x[:, bank.views[f]], w) + b[:, None, :]
                loss = loss + F.cross_entropy(logits.reshape(-1, num_classes), y.repeat(len(w)),
                                              reduction="sum") / len(y)
            loss.backward()
            lr_factor = cosine_factor(step, iterations)
            with torch.no_grad():
                for f in groups:
                    w, b = bank.weights[f], bank.biases[f]
                    assert w.grad is not None and b.grad is not None
                    w_buf[f].mul_(momentum).add_(w.grad + wds[f][:, None, None] * w)
                    b_buf[f].mul_(momentum).add_(b.grad)
                    w.sub_(lrs[f][:, None, None] * lr_factor * w_buf[f])
                    b.sub_(lrs[f][:, None] * lr_factor * b_buf[f])
    for f in groups:
        for p in (bank.weights[f], bank.biases[f]):
            p.grad = None
            p.requires_grad_(False)
    return bank


def evaluate_heads(bank: HeadBank, features: torch.Tensor, labels: torch.Tensor, topk: Sequence[int] = (1, 5),
                   device: torch.device | str = "cpu", max_elements: int = 1 << 26,
                   rows: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
    """Accuracy in percent of every head: ``{k: [H]}`` for each k in ``topk`` (k capped at C).

    ``features`` [N, D_all], ``labels`` [N] (only ``rows`` of them when given); evaluated in chunks
    so that one chunk of scores [H, chunk, C] holds at most ``max_elements`` values.
    """
    device = torch.device(device)
    h, c = len(bank.configs), bank.num_classes
    chunk = max(1, max_elements // max(h * c, 1))
    positions = torch.arange(len(features)) if rows is None else rows
    hits = {k: torch.zeros(h, dtype=torch.float64) for k in topk}
    with torch.no_grad():
        for start in range(0, len(positions), chunk):
            part = positions[start:start + chunk]
            x = features[part].to(device).float()
            y = labels[part].to(device).long()
            scores = bank.logits(x)  # [H, B, C]
            ranked = scores.topk(min(max(topk), c), dim=2).indices  # [H, B, k]
            correct = ranked == y.view(1, -1, 1)
            for k in topk:
                hits[k] += correct[:, :, :min(k, c)].any(dim=2).sum(dim=1).double().cpu()
    return {k: 100.0 * v / max(len(positions), 1) for k, v in hits.items()}
