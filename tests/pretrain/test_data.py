"""Multi-crop data: shapes, per-sample determinism, per-crop baseline masks, the resumable sampler."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from attmask.eval.datasets import index_image_folder
from attmask.pretrain.data import EpochSampler, MultiCropDataset, build_loader, crop_major
from attmask.pretrain.masking import num_masked

from .helpers import tiny


@pytest.fixture(scope="module")
def index(data_root: Path):
    return index_image_folder(data_root / "cifar10-mini" / "train", subset=3)


def test_sample_shapes_and_determinism(index) -> None:
    cfg = tiny(local_crops_number=3)
    ds = MultiCropDataset(index, cfg)
    g, loc, masks, label = ds[(0, 5)]
    assert g.shape == (2, 3, 32, 32) and loc.shape == (3, 3, 16, 16)
    assert masks.numel() == 0  # AttMask masks are made in the step
    assert label == index.labels[5]
    g2, loc2, _, _ = ds[(0, 5)]
    assert torch.equal(g, g2) and torch.equal(loc, loc2)  # same (seed, epoch, index), same crops
    g3, _, _, _ = ds[(1, 5)]
    assert not torch.equal(g, g3)  # a new epoch draws new crops
    assert not torch.equal(g[0], g[1])  # two different global views


@pytest.mark.parametrize("shape", ["rand", "block"])
def test_baseline_masks_drawn_per_crop(index, shape: str) -> None:
    cfg = tiny(pred_shape=shape, pred_ratio=[0.0, 0.3], pred_ratio_var=[0.0, 0.2], patch_size=4)
    ds = MultiCropDataset(index, cfg)
    counts = []
    for i in range(len(ds)):
        masks = ds[(0, i)][2]
        assert masks.shape == (2, 8, 8) and masks.dtype == torch.bool
        counts += masks.flatten(1).sum(1).tolist()
    zero = sum(c == 0 for c in counts) / len(counts)
    assert 0.25 < zero < 0.75  # unmasked with probability 0.5
    assert all(c <= num_masked(64, 0.5) + 1 for c in counts)
    if shape == "rand":
        assert all(c == 0 or num_masked(64, 0.1) <= c <= num_masked(64, 0.5) for c in counts)
    assert torch.equal(ds[(0, 2)][2], ds[(0, 2)][2])


def test_epoch_sampler_matches_distributed_sampler() -> None:
    for rank in range(3):
        ours = EpochSampler(50, 4, seed=7, rank=rank, world_size=3)
        ref = DistributedSampler(range(50), num_replicas=3, rank=rank, shuffle=True, seed=7)
        ours.set_epoch(2)
        ref.set_epoch(2)
        expected = list(ref)[: ours.iters_per_epoch * 4]
        assert [i for e, i in ours] == expected and all(e == 2 for e, _ in ours)
        assert ours.iters_per_epoch == 17 // 4
    s = EpochSampler(50, 4, seed=7)
    s.set_epoch(1, skip_batches=3)
    full = EpochSampler(50, 4, seed=7)
    full.set_epoch(1)
    assert list(s) == list(full)[12:] and len(s) == len(list(full)) - 12


def test_sampler_rejects_too_few_images() -> None:
    from attmask.eval.errors import BadInput

    with pytest.raises(BadInput, match="cannot fill one batch"):
        EpochSampler(10, 8, seed=0, world_size=2)


def test_loader_batches_crop_major(index) -> None:
    cfg = tiny(local_crops_number=2)
    ds = MultiCropDataset(index, cfg)
    sampler = EpochSampler(len(ds), 4, seed=0)
    sampler.set_epoch(0)
    batch = next(iter(build_loader(ds, sampler, num_workers=0)))
    g = batch[0]
    assert g.shape == (4, 2, 3, 32, 32)
    cm = crop_major(g)
    assert cm.shape == (8, 3, 32, 32)
    assert torch.equal(cm[1], g[1, 0]) and torch.equal(cm[4 + 1], g[1, 1])  # crop 0 of all images first
