"""augment_on=device: the batched multi-crop augmentation against torchvision's operations, the
reference pipeline's statistics, its probabilities per crop, and inside a training run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as TF

from attmask.eval.datasets import index_image_folder
from attmask.eval.errors import BadInput
from attmask.eval.transforms import IMAGENET_MEAN, IMAGENET_STD
from attmask.pretrain.batch_augment import (
    DeviceMultiCrop,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    load_images,
    resized_crop_params,
)
from attmask.pretrain.data import MultiCropDataset
from attmask.pretrain.trainer import Trainer

from .helpers import tiny

NO_AUGMENT = dict(flip_prob=0.0, color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=[0.0, 0.0, 0.0],
                  solarize_prob=0.0, global_crops_scale=[1.0, 1.0], augment_on="device")


@pytest.fixture(scope="module")
def index(data_root: Path):
    return index_image_folder(data_root / "cifar10-mini" / "train", subset=20)


@pytest.fixture(scope="module")
def images(index) -> torch.Tensor:
    return load_images(index)


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)


def test_load_images_decodes_rgb(index, images) -> None:
    assert images.dtype == torch.uint8 and images.shape == (len(index), 3, 32, 32)
    with Image.open(Path(index.root) / index.paths[7]) as img:
        expected = TF.pil_to_tensor(img.convert("RGB"))
    assert torch.equal(images[7], expected)


def test_load_images_rejects_mixed_sizes(tmp_path: Path) -> None:
    for name, size in (("a.png", (32, 32)), ("b.png", (40, 32))):
        (tmp_path / "train" / "c").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size).save(tmp_path / "train" / "c" / name)
    with pytest.raises(BadInput, match=r"b\.png.*one size"):
        load_images(index_image_folder(tmp_path / "train"))


@pytest.mark.parametrize("ours, theirs, low, high", [
    (adjust_brightness, TF.adjust_brightness, 0.6, 1.4),
    (adjust_contrast, TF.adjust_contrast, 0.6, 1.4),
    (adjust_saturation, TF.adjust_saturation, 0.8, 1.2),
    (adjust_hue, TF.adjust_hue, -0.1, 0.1),
])
def test_colour_operations_equal_torchvision(images, ours, theirs, low, high) -> None:
    x = images[:6].float() / 255
    factors = torch.linspace(low, high, 6)
    got = ours(x, factors)
    for i in range(6):
        torch.testing.assert_close(got[i], theirs(x[i], float(factors[i])), atol=2e-6, rtol=0)


def test_blur_equals_torchvision(images) -> None:
    x = TF.resize(images[:4].float() / 255, [16, 16], antialias=True)  # a local crop's size
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    got = gaussian_blur(x, sigma, radius=6)
    for i in range(4):
        s = float(sigma[i])
        torch.testing.assert_close(got[i], TF.gaussian_blur(x[i], [13, 13], [s, s]), atol=1e-6, rtol=0)


def test_crop_parameters_follow_torchvision() -> None:
    n, scale = 20000, (0.05, 0.25)
    boxes = resized_crop_params(n, 32, 32, scale, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (h >= 1) & (w >= 1) & (top + h <= 32) & (left + w <= 32)).all())
    assert torch.equal(boxes, boxes.round())
    torch.manual_seed(0)
    ref = torch.tensor([RandomResizedCrop.get_params(torch.empty(3, 32, 32), list(scale), [3 / 4, 4 / 3])
                        for _ in range(n)], dtype=torch.float32)
    for ours, theirs in ((h * w, ref[:, 2] * ref[:, 3]), (w / h, ref[:, 3] / ref[:, 2]), (top, ref[:, 0])):
        se = math.sqrt(ours.var() / n + theirs.var() / n)
        assert abs(float(ours.mean() - theirs.mean())) < 4 * se
    # a scale no aspect ratio can meet exactly falls back to the whole (square) image, as torchvision
    full = resized_crop_params(500, 32, 32, (1.0, 1.0), torch.Generator().manual_seed(1))
    assert bool(((full[:, 2] == 32) & (full[:, 3] == 32) & (full[:, :2] == 0).all(dim=1)).all())


def test_whole_image_crop_is_the_image_and_flip_mirrors_it(images) -> None:
    cfg = tiny(**NO_AUGMENT)
    idx = torch.arange(8)
    g, loc = DeviceMultiCrop(images, cfg)(idx, torch.Generator().manual_seed(0))
    assert g.shape == (8, 2, 3, 32, 32) and loc.shape == (8, 2, 3, 16, 16)
    original = images[:8].float() / 255
    torch.testing.assert_close(unnormalise(g[:, 0]), original, atol=1e-5, rtol=0)
    torch.testing.assert_close(unnormalise(g[:, 1]), original, atol=1e-5, rtol=0)
    g, _ = DeviceMultiCrop(images, tiny(**{**NO_AUGMENT, "flip_prob": 1.0}))(idx, torch.Generator().manual_seed(0))
    torch.testing.assert_close(unnormalise(g[:, 0]), original.flip(-1), atol=1e-5, rtol=0)


def test_blur_and_solarisation_per_crop(images) -> None:
    """blur_prob [first global, other globals, locals] and solarisation on globals after the first only."""
    cfg = tiny(**{**NO_AUGMENT, "blur_prob": [1.0, 0.0, 0.0], "blur_radius": [1.0, 2.0], "solarize_prob": 1.0})
    g, _ = DeviceMultiCrop(images, cfg)(torch.arange(8), torch.Generator().manual_seed(0))
    original = images[:8].float() / 255
    first, second = unnormalise(g[:, 0]), unnormalise(g[:, 1])
    assert (first - original).abs().amax(dim=(1, 2, 3)).min() > 0.02  # every first crop blurred
    solarised = torch.where(original >= 128 / 255, 1 - original, original)
    torch.testing.assert_close(second, solarised, atol=1e-5, rtol=0)


@pytest.mark.parametrize("key, value", [("flip_prob", 0.5), ("grayscale_prob", 0.2), ("color_jitter_prob", 0.8)])
def test_each_operation_applies_at_its_rate(images, key: str, value: float) -> None:
    cfg = tiny(**{**NO_AUGMENT, key: value, "color_jitter": [0.4, 0.0, 0.0, 0.0]})
    idx = torch.arange(images.shape[0]).repeat(25)  # 500 images x 2 global crops
    g, _ = DeviceMultiCrop(images, cfg)(idx, torch.Generator().manual_seed(2))
    x, original = unnormalise(g), images[idx].float().unsqueeze(1) / 255
    if key == "flip_prob":
        hit = ((x - original.flip(-1)).abs().amax(dim=(2, 3, 4)) < 1e-4)
    elif key == "grayscale_prob":  # (some CIFAR images are grey already: left out)
        colour = (original.std(dim=2).amax(dim=(2, 3)) > 1e-3).expand(-1, 2)
        hit = (x.std(dim=2).amax(dim=(2, 3)) < 1e-5)[colour]
    else:
        hit = (x - original).abs().amax(dim=(2, 3, 4)) > 1e-3
    rate = hit.float().mean().item()
    assert abs(rate - value) < 4 * math.sqrt(value * (1 - value) / hit.numel()), rate


def test_statistics_match_the_pil_pipeline(index, images) -> None:
    """Same configuration, the loader's PIL crops vs the device crops: pixel statistics agree."""
    cfg = tiny(local_crops_number=6, global_crops_scale=[0.25, 1.0])
    ds = MultiCropDataset(index, cfg)
    pil = [ds[(e, i)] for e in range(3) for i in range(len(index))]
    pil_g, pil_l = torch.stack([s[0] for s in pil]), torch.stack([s[1] for s in pil])
    dev = DeviceMultiCrop(images, tiny(local_crops_number=6, global_crops_scale=[0.25, 1.0], augment_on="device"))
    dev_g, dev_l = dev(torch.arange(len(index)).repeat(3), torch.Generator().manual_seed(0))
    for a, b in ((pil_g, dev_g), (pil_l, dev_l)):
        assert abs(float(a.mean() - b.mean())) < 0.08
        assert abs(float(a.std() - b.std())) < 0.05
        assert abs(float(a.std(dim=(3, 4)).mean() - b.std(dim=(3, 4)).mean())) < 0.05  # contrast within crops
        grad_a, grad_b = (a[..., 1:] - a[..., :-1]).abs().mean(), (b[..., 1:] - b[..., :-1]).abs().mean()
        assert abs(float(grad_a / grad_b) - 1) < 0.1  # sharpness (crop scale, blur)


def test_determinism_under_the_generator(images) -> None:
    aug = DeviceMultiCrop(images, tiny(augment_on="device"))
    idx = torch.tensor([3, 1, 4, 1, 5])
    a = aug(idx, torch.Generator().manual_seed(9))
    b = aug(idx, torch.Generator().manual_seed(9))
    c = aug(idx, torch.Generator().manual_seed(10))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0][1], a[0][3])  # the same image twice in a batch gets its own crops


def test_loader_hands_out_indices_in_device_mode(index) -> None:
    ds = MultiCropDataset(index, tiny(augment_on="device", pred_shape="rand"))
    i, empty, masks, label = ds[(0, 5)]
    assert i.dtype == torch.int64 and int(i) == 5 and empty.numel() == 0
    assert masks.shape == (2, 4, 4) and label == index.labels[5]


@pytest.mark.parametrize("shape", ["attmask_high", "block"])
def test_training_with_device_augmentation_resumes_exactly(tmp_path: Path, shape: str) -> None:
    cfg = tiny(augment_on="device", pred_shape=shape, epochs=2)
    whole = Trainer(cfg, tmp_path / "whole", progress=False)
    summary = whole.run()
    assert summary.complete and math.isfinite(summary.last_epoch_stats["loss"])
    Trainer(cfg, tmp_path / "part", progress=False, max_steps=3).run()
    resumed = Trainer(cfg, tmp_path / "part", progress=False, resume=True)
    resumed.run()
    for key in ("student", "teacher"):
        for name, tensor in whole.final_state[key].items():
            assert torch.equal(tensor, resumed.final_state[key][name]), name
