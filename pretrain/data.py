"""Pre-training data: an ImageFolder of multi-crop samples and a resumable distributed sampler.

Determinism (what makes ``--resume`` exact and the data independent of the number of workers): the
sampler yields ``(epoch, index)`` keys, and each sample seeds Python's ``random`` and torch's
generator from ``(seed, epoch, index)`` before augmenting. The per-epoch permutation and the split
across ranks are those of ``torch.utils.data.DistributedSampler`` (shuffle with ``seed + epoch``,
padded to a multiple of the world size, rank r takes positions r, r + W, ...); the loader drops the
last incomplete batch, as the reference.

The baselines' masks (``rand``, ``block``) are drawn per global crop here, as the reference's
``ImageFolderMask`` does, with a ratio drawn per crop; AttMask masks are made in the training step
from the teacher's attention.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from attmask.eval.datasets import ImageIndex
from attmask.eval.errors import BadInput

from .augment import MultiCropAugmentation
from .config import PretrainConfig
from .masking import block_mask, draw_pred_ratio, random_mask

Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]


def mixed_seed(*words: int) -> int:
    """A 63-bit seed mixed from ``words`` (NumPy ``SeedSequence``): one per (seed, epoch, index) sample
    here, one per (seed, rank, step, stream) in the training step."""
    state = np.random.SeedSequence(list(words)).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def crop_mask(pred_shape: str, grid: tuple[int, int], ratio: float, generator: torch.Generator,
              aspect_ratio: tuple[float, float]) -> torch.Tensor:
    """[h, w] bool mask of one crop for the per-crop baselines (``rand`` or ``block``)."""
    if pred_shape == "rand":
        return random_mask(grid, ratio, generator)
    if pred_shape == "block":
        return block_mask(grid, ratio, generator, aspect_ratio)
    raise ValueError(f"{pred_shape!r} masks are not drawn per crop")


class MultiCropDataset(Dataset):
    """Item ``(epoch, i)`` -> (globals [G, 3, H, W], locals [L, 3, h, w], masks [G, H/p, W/p] bool or [0],
    label); with ``augment_on: device`` -> (i as a 0-d int64 tensor, [0], masks, label): the step makes
    the crops on the device (``batch_augment.DeviceMultiCrop``)."""

    def __init__(self, index: ImageIndex, cfg: PretrainConfig) -> None:
        self.index = index
        self.augment = MultiCropAugmentation(cfg) if cfg.augment_on == "loader" else None
        self.seed = cfg.seed
        self.per_crop_masks = cfg.masks_student and cfg.pred_shape in ("rand", "block")
        self.pred_shape = cfg.pred_shape
        grid = cfg.global_crops_size // cfg.patch_size
        self.grid = (grid, grid)
        self.num_global = cfg.global_crops_number
        self.pred_ratio = cfg.pred_ratio
        self.pred_ratio_var = cfg.pred_ratio_var
        self.aspect_ratio = (cfg.pred_aspect_ratio[0], cfg.pred_aspect_ratio[1])
        self.pred_start_epoch = cfg.pred_start_epoch

    def __len__(self) -> int:
        return len(self.index)

    def load(self, i: int) -> Image.Image:
        path = Path(self.index.root) / self.index.paths[i]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise BadInput(path, f"cannot read image ({exc})") from None

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        epoch, i = key
        s = mixed_seed(self.seed, epoch, i)  # one seed per sample of an epoch
        if self.augment is not None:
            random.seed(s)
            torch.default_generator.manual_seed(s)  # CPU generator only (no per-sample CUDA seeding cost)
            global_crops, local_crops = self.augment(self.load(i))
        else:
            global_crops, local_crops = torch.tensor(i, dtype=torch.int64), torch.zeros(0)
        if self.per_crop_masks:
            gen = torch.Generator().manual_seed(s ^ 0x5EED)
            masks = []
            for _ in range(self.num_global):
                ratio = (draw_pred_ratio(self.pred_ratio, self.pred_ratio_var, gen)
                         if epoch >= self.pred_start_epoch else 0.0)
                masks.append(crop_mask(self.pred_shape, self.grid, ratio, gen, self.aspect_ratio))
            mask_tensor = torch.stack(masks)
        else:
            mask_tensor = torch.zeros(0, dtype=torch.bool)
        return global_crops, local_crops, mask_tensor, self.index.labels[i]


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` for this rank's share of one epoch, from batch ``skip_batches`` on.

    Same permutation and rank split as ``DistributedSampler(shuffle=True, seed=seed)``; only the
    ``iters_per_epoch · batch_size`` positions that complete batches are yielded.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if size < world_size * batch_size:
            raise BadInput(None, f"{size} training images cannot fill one batch of {batch_size} on each of "
                                 f"{world_size} process(es): lower batch_size_per_gpu")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.per_rank = -(-size // world_size)
        self.epoch = 0
        self.skip_batches = 0

    @property
    def iters_per_epoch(self) -> int:
        return self.per_rank // self.batch_size

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        if not 0 <= skip_batches <= self.iters_per_epoch:
            raise ValueError(f"cannot skip {skip_batches} of {self.iters_per_epoch} batches")
        self.epoch, self.skip_batches = epoch, skip_batches

    def rank_indices(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        total = self.per_rank * self.world_size
        order += order[: total - len(order)]
        return order[self.rank:total:self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        idx = self.rank_indices(self.epoch)
        start, stop = self.skip_batches * self.batch_size, self.iters_per_epoch * self.batch_size
        return iter([(self.epoch, i) for i in idx[start:stop]])

    def __len__(self) -> int:
        return (self.iters_per_epoch - self.skip_batches) * self.batch_size


def build_loader(dataset: MultiCropDataset, sampler: EpochSampler, *, num_workers: int,
                 pin_memory: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=sampler.batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=True, persistent_workers=num_workers > 0,
                      prefetch_factor=2 if num_workers > 0 else None)


def crop_major(batch: torch.Tensor) -> torch.Tensor:
    """[B, C, ...] per-image stacks of C crops -> [C·B, ...], all images' crop 0 first (the reference order)."""
    b, c = batch.shape[:2]
    return batch.transpose(0, 1).reshape(c * b, *batch.shape[2:])
