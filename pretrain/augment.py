"""Multi-crop augmentation (DINO / iBOT ``DataAugmentationiBOT``), every option configurable.

- global crop 1: RandomResizedCrop(size_g, scale_g, bicubic), flip, colour jitter (0.4, 0.4, 0.2, 0.1)
  with p = 0.8, grayscale p = 0.2, Gaussian blur p = 1.0, normalise;
- global crops 2..G: the same with blur p = 0.1 and solarisation p = 0.2;
- L local crops: RandomResizedCrop(size_l, scale_l), flip, jitter, grayscale, blur p = 0.5.

Randomness comes from Python's ``random`` and torch's global generator (torchvision's transforms);
the dataset seeds both per sample (see ``data.py``), so crops depend only on (seed, epoch, index).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision import transforms as T

from attmask.eval.transforms import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS

from .config import PretrainConfig


class GaussianBlur:
    """PIL Gaussian blur with radius ~ U(radius_min, radius_max), applied with probability ``p`` (DINO)."""

    def __init__(self, p: float, radius_min: float = 0.1, radius_max: float = 2.0) -> None:
        self.p, self.radius_min, self.radius_max = p, radius_min, radius_max

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() > self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.radius_min, self.radius_max)))


class Solarization:
    """PIL solarisation (threshold 128) with probability ``p`` (DINO / BYOL)."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.solarize(img) if random.random() < self.p else img


@dataclass(frozen=True)
class CropSpec:
    number: int
    size: int
    scale: tuple[float, float]


class MultiCropAugmentation:
    """PIL image -> (global crops [G, 3, Hg, Wg], local crops [L, 3, Hl, Wl]) float tensors."""

    def __init__(self, cfg: PretrainConfig) -> None:
        interp = INTERPOLATIONS[cfg.crop_interpolation]
        b, c, s, h = cfg.color_jitter
        flip_and_color = T.Compose([
            T.RandomHorizontalFlip(p=cfg.flip_prob),
            T.RandomApply([T.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h)], p=cfg.color_jitter_prob),
            T.RandomGrayscale(p=cfg.grayscale_prob),
        ])
        normalize = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        rmin, rmax = cfg.blur_radius
        blur1, blur2, blur_local = cfg.blur_prob
        self.globals = CropSpec(cfg.global_crops_number, cfg.global_crops_size, tuple(cfg.global_crops_scale))
        self.locals = CropSpec(cfg.local_crops_number, cfg.local_crops_size, tuple(cfg.local_crops_scale))
        self.global1 = T.Compose([
            T.RandomResizedCrop(cfg.global_crops_size, scale=self.globals.scale, interpolation=interp),
            flip_and_color, GaussianBlur(blur1, rmin, rmax), normalize,
        ])
        self.global2 = T.Compose([
            T.RandomResizedCrop(cfg.global_crops_size, scale=self.globals.scale, interpolation=interp),
            flip_and_color, GaussianBlur(blur2, rmin, rmax), Solarization(cfg.solarize_prob), normalize,
        ])
        self.local = T.Compose([
            T.RandomResizedCrop(cfg.local_crops_size, scale=self.locals.scale, interpolation=interp),
            flip_and_color, GaussianBlur(blur_local, rmin, rmax), normalize,
        ])

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        g = [self.global1(img)] + [self.global2(img) for _ in range(self.globals.number - 1)]
        loc = [self.local(img) for _ in range(self.locals.number)]
        size = self.locals.size
        locals_ = torch.stack(loc) if loc else torch.empty(0, 3, size, size)
        return torch.stack(g), locals_
