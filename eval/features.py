"""Backbone features: layer sets and batched, deterministic extraction.

Layer sets (features always taken after the final norm, as the reference's
``get_intermediate_layers`` does):

- ``cls``: CLS token of the last block, [B, D] (the k-NN feature);
- ``cls4``: CLS of the last 4 blocks concatenated oldest first, [B, 4D];
- ``avgpool``: mean patch token of the last block, [B, D];
- ``cls+avgpool``: the two concatenated, [B, 2D] (DINO's linear feature for ViT-B);
- ``cls4+avgpool``: ``cls4`` then ``avgpool``, [B, 5D] (DINOv2's linear-probe input: every set
  above except ``patch`` is a slice of it, so one pass serves a sweep over them);
- ``patch``: all patch tokens of the last block, [B, N, D].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import distributed as dist
from .datasets import ImageIndex
from .errors import BadInput
from .transforms import EvalTransform

log = logging.getLogger(__name__)

LAYER_SETS = ("cls", "cls4", "avgpool", "cls+avgpool", "cls4+avgpool", "patch")


def default_linear_layers(embed_dim: int) -> str:
    """DINO's rule: ``cls4`` for ViT-S and smaller (embed dim <= 384), ``cls+avgpool`` above."""
    return "cls4" if embed_dim <= 384 else "cls+avgpool"


def intermediate_layers(model: nn.Module, images: torch.Tensor, n: int = 1) -> list[torch.Tensor]:
    """Outputs [B, prefix + N, D] of the last ``n`` blocks, each passed through the final norm.

    Equals the reference ``VisionTransformer.get_intermediate_layers(x, n)`` (DINO / iBOT):
    note the final norm on every returned layer, which timm's method of that name omits by default.
    """
    x = model.patch_embed(images)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    x = model.norm_pre(x)
    outputs = []
    depth = len(model.blocks)
    for i, blk in enumerate(model.blocks):
        x = blk(x)
        if i >= depth - n:
            outputs.append(model.norm(x))
    return outputs


def forward_layers(model: nn.Module, images: torch.Tensor, layers: str) -> torch.Tensor:
    """Features of ``images`` [B, C, H, W] for a layer set (see the module docstring for shapes)."""
    if layers not in LAYER_SETS:
        raise BadInput(None, f"unknown layer set {layers!r} (choose from {', '.join(LAYER_SETS)})")
    prefix = model.num_prefix_tokens
    n = 4 if layers in ("cls4", "cls4+avgpool") else 1
    outs = intermediate_layers(model, images, n)
    last = outs[-1]
    if layers == "cls":
        return last[:, 0]
    if layers == "cls4":
        return torch.cat([o[:, 0] for o in outs], dim=-1)
    if layers == "avgpool":
        return last[:, prefix:].mean(dim=1)
    if layers == "cls+avgpool":
        return torch.cat([last[:, 0], last[:, prefix:].mean(dim=1)], dim=-1)
    if layers == "cls4+avgpool":
        return torch.cat([*(o[:, 0] for o in outs), last[:, prefix:].mean(dim=1)], dim=-1)
    return last[:, prefix:]


class ImageListDataset(Dataset):
    """Images of an ``ImageIndex`` with their labels and positions (for distributed gathering)."""

    def __init__(self, index: ImageIndex, transform: EvalTransform, positions: list[int] | None = None) -> None:
        self.index = index
        self.tf = transform.build()
        self.positions = list(range(len(index))) if positions is None else positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        pos = self.positions[i]
        path = Path(self.index.root) / self.index.paths[pos]
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise BadInput(path, f"cannot read image ({exc})") from None
        return self.tf(rgb), self.index.labels[pos], pos


@dataclass
class FeatureSet:
    features: np.ndarray  # [N, D] (or [N, P, D] for ``patch``), float32
    labels: np.ndarray  # [N] int64
    paths: np.ndarray  # [N] unicode, relative to the index root


def autocast_for(device: torch.device, enabled: bool = True) -> torch.autocast:
    """fp16 autocast on CUDA unless ``enabled`` is false (features are returned in float32); disabled elsewhere."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, enabled=False)


def extract_features(model: nn.Module, index: ImageIndex, transform: EvalTransform, layers: str,
                     device: torch.device, batch_size: int = 128, num_workers: int = 0,
                     progress: bool = True, amp: bool = True) -> FeatureSet:
    """Features for every image of ``index``, in index order.

    Under torchrun each rank extracts a strided shard and the shards are gathered back into
    index order on every rank, so the result equals a single-process run.
    """
    if len(index) == 0:
        raise BadInput(index.root, "no images to extract")
    rank, world = dist.rank(), dist.world_size()
    positions = list(range(rank, len(index), world))
    ds = ImageListDataset(index, transform, positions)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    model = model.to(device).eval()
    feats: list[torch.Tensor] = []
    pos_out: list[torch.Tensor] = []
    bar = tqdm(loader, desc=f"features {index.root.name}", unit="batch", disable=not progress or not dist.is_main(),
               leave=False)
    with torch.inference_mode():
        for images, _labels, pos in bar:
            images = images.to(device, non_blocking=True)
            with autocast_for(device, amp):
                out = forward_layers(model, images, layers)
            feats.append(out.float().cpu())
            pos_out.append(pos)
    local = torch.cat(feats) if feats else torch.empty(0)
    local_pos = torch.cat(pos_out) if pos_out else torch.empty(0, dtype=torch.long)
    if world > 1:
        local, local_pos = dist.gather_in_order(local, local_pos, len(index))
    labels = np.asarray(index.labels, dtype=np.int64)
    return FeatureSet(features=local.numpy().astype(np.float32, copy=False), labels=labels,
                      paths=np.asarray(index.paths, dtype=str))
