"""Multi-crop augmentation on the training device, a whole batch at once (``augment_on: device``).

The transforms, parameters and probabilities of ``augment.py`` (DINO / iBOT ``DataAugmentationiBOT``),
drawn independently per image and per crop, applied as batched tensor operations. The data loader
then only hands out image indices (and the baselines' per-crop masks), so runs on small images are
no longer bound by PIL in the loader workers: on cifar10-mini the PIL pipeline costs 2.1 ms per
sample (2 x 32 + 6 x 16 px crops) per CPU core, i.e. 100 epochs of one run need about 2,100 CPU
core-seconds, more than the GPU step.

Order per crop, as the PIL pipeline: RandomResizedCrop (torchvision's parameter draw: 10 attempts,
then the central fallback) -> horizontal flip -> colour jitter (brightness, contrast, saturation,
hue in a random order per crop, torchvision's tensor formulas) with ``color_jitter_prob`` ->
grayscale with ``grayscale_prob`` -> Gaussian blur (sigma ~ U(blur_radius), the PIL radius) with
the crop's ``blur_prob`` -> solarisation (threshold 128/255) with ``solarize_prob`` on globals after
the first -> normalise.

Where it differs from PIL, none of which the objective can see at these scales: the crop is
resampled with ``grid_sample`` (bicubic a = -0.75, PIL's a = -0.5; no antialiasing, so the mode
suits small images whose crops are enlarged, as CIFAR's 32 px images are; reading across the crop
border at its edge), pixels stay float between operations (PIL rounds to 8 bits after each), and
the blur is an exact separable Gaussian of radius ceil(3 sigma_max) with reflected borders (PIL
approximates it with three box passes).

All images are decoded once and held on the device as uint8 ``[N, 3, H, W]``, so they must share
one size. Randomness comes from the generator the step passes in (seeded from seed, rank, step), so
``--resume`` stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from attmask.eval.datasets import ImageIndex
from attmask.eval.errors import BadInput
from attmask.eval.transforms import IMAGENET_MEAN, IMAGENET_STD

from .config import PretrainConfig

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
SOLARIZE_THRESHOLD = 128 / 255  # PIL ImageOps.solarize(threshold=128) on 8-bit pixels
RRC_ATTEMPTS = 10
RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range (the reference keeps it)


def load_images(index: ImageIndex) -> torch.Tensor:
    """Every image of ``index`` decoded to RGB, as uint8 [N, 3, H, W] (all images must share one size)."""
    root = Path(index.root)
    arrays = []
    size = None
    for rel in index.paths:
        path = root / rel
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise BadInput(path, f"cannot read image ({exc})") from None
        if size is None:
            size = rgb.size
        elif rgb.size != size:
            raise BadInput(path, f"image is {rgb.size[0]}x{rgb.size[1]} px, the first one {size[0]}x{size[1]}: "
                                 "augment_on=device needs images of one size (use augment_on=loader)")
        arrays.append(torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8))
    if not arrays:
        raise BadInput(root, "no images to augment")
    assert size is not None
    w, h = size
    return torch.stack(arrays).view(len(arrays), h, w, 3).permute(0, 3, 1, 2).contiguous()


# -- parameter draws ------------------------------------------------------------------------------


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, device=device)


def resized_crop_params(n: int, height: int, width: int, scale: tuple[float, float], gen: torch.Generator,
                        ratio: tuple[float, float] = RATIO) -> torch.Tensor:
    """[n, 4] float (top, left, h, w) as torchvision's ``RandomResizedCrop.get_params`` draws them:
    up to 10 (area, log-aspect) attempts, the first that fits wins, else the central crop."""
    device = gen.device
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, RRC_ATTEMPTS, generator=gen, device=device))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, RRC_ATTEMPTS, generator=gen, device=device))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first fitting attempt (0 when none fits)
    found = fits.any(dim=1)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = height, int(round(height * ratio[1]))
    else:
        fw, fh = width, height
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    u = torch.rand(n, 2, generator=gen, device=device)
    top = torch.where(found, torch.floor(u[:, 0] * (height - h + 1)), torch.full_like(h, (height - fh) // 2))
    left = torch.where(found, torch.floor(u[:, 1] * (width - w + 1)), torch.full_like(w, (width - fw) // 2))
    return torch.stack([top, left, h, w], dim=1)


def crop_grid(boxes: torch.Tensor, flips: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    """``grid_sample`` grid [n, size, size, 2] resampling each box (top, left, h, w) to size x size,
    mirrored where ``flips``; output pixel centres map to box pixel centres as in PIL's resize."""
    t = (torch.arange(size, device=boxes.device, dtype=torch.float32) + 0.5) / size  # [size] in (0, 1)
    tx = torch.where(flips[:, None], 1 - t[None], t[None])  # [n, size]
    top, left, h, w = boxes.unbind(1)
    x = 2 * (left[:, None] + tx * w[:, None]) / width - 1  # align_corners=False coordinates
    y = 2 * (top[:, None] + t[None] * h[:, None]) / height - 1
    return torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), dim=-1)


# -- colour operations on float images [n, 3, h, w] in [0, 1], one factor per image ----------------


def grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = GRAY_WEIGHTS
    return (r * x[:, 0] + g * x[:, 1] + b * x[:, 2]).unsqueeze(1)


def _per_image(f: torch.Tensor) -> torch.Tensor:
    return f.view(-1, 1, 1, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * _per_image(factor)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_image(factor)
    return (f * x + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = _per_image(factor)
    return (f * x + (1 - f) * grayscale(x)).clamp(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    flat = maxc == minc
    chroma = maxc - minc
    s = chroma / torch.where(flat, torch.ones_like(maxc), maxc)
    c = torch.where(flat, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / c, (maxc - g) / c, (maxc - b) / c
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~is_r & ~is_g
    h = is_r * (bc - gc) + is_g * (2.0 + rc - bc) + is_b * (4.0 + gc - rc)
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    sector = (i.to(torch.int64) % 6).unsqueeze(1)  # [n, 1, h, w]
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    one_hot = sector == torch.arange(6, device=hsv.device).view(1, 6, 1, 1)  # [n, 6, h, w]
    table = (torch.stack([v, q, p, p, t, v], 1), torch.stack([t, v, v, q, p, p], 1), torch.stack([p, p, t, v, v, q], 1))
    return torch.stack([(c * one_hot).sum(dim=1) for c in table], dim=1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    hsv = rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], dim=1))


COLOR_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur, a sigma per image, ``2·radius + 1`` taps (fewer on tiny images),
    reflected borders (torchvision's ``gaussian_blur`` for tensors)."""
    n, c, h, w = x.shape
    r = min(radius, h - 1, w - 1)
    if r < 1:
        return x
    taps = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (taps[None] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [n·c, 2r + 1]
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, kernel.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, kernel.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


@dataclass(frozen=True)
class CropGroup:
    """Crops made alike: ``count`` views of ``size`` px from ``scale``, with per-view blur and
    solarisation probabilities (tensors [count] on the device, built once)."""

    count: int
    size: int
    scale: tuple[float, float]
    blur_prob: torch.Tensor
    solarize_prob: torch.Tensor
    blurs: bool  # any view may be blurred
    solarises: bool


def crop_group(count: int, size: int, scale: list[float], blur_p: list[float], solarize_p: list[float],
               device: torch.device) -> CropGroup:
    return CropGroup(count, size, (scale[0], scale[1]), torch.tensor(blur_p, device=device),
                     torch.tensor(solarize_p, device=device), any(p > 0 for p in blur_p),
                     any(p > 0 for p in solarize_p))


class DeviceMultiCrop:
    """``aug(indices, generator)`` -> (globals [B, G, 3, Hg, Wg], locals [B, L, 3, h, w]), normalised,
    for the images ``indices`` of ``images`` (uint8 [N, 3, H, W] on the training device)."""

    def __init__(self, images: torch.Tensor, cfg: PretrainConfig) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.cfg = cfg
        self.mode = cfg.crop_interpolation
        self.blur_radius_px = max(1, math.ceil(3 * cfg.blur_radius[1]))
        device = images.device
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        g_n, l_n = cfg.global_crops_number, cfg.local_crops_number
        blur1, blur2, blur_local = cfg.blur_prob
        self.globals = crop_group(g_n, cfg.global_crops_size, cfg.global_crops_scale, [blur1] + [blur2] * (g_n - 1),
                                  [0.0] + [cfg.solarize_prob] * (g_n - 1), device)
        self.locals = crop_group(l_n, cfg.local_crops_size, cfg.local_crops_scale, [blur_local] * l_n,
                                 [0.0] * l_n, device)

    def __call__(self, indices: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = indices.to(self.images.device)
        globals_ = self.crops(idx, self.globals, gen)
        if self.locals.count:
            locals_ = self.crops(idx, self.locals, gen)
        else:
            size = self.locals.size
            locals_ = torch.empty(len(idx), 0, 3, size, size, device=self.images.device)
        return globals_, locals_

    def crops(self, idx: torch.Tensor, group: CropGroup, gen: torch.Generator) -> torch.Tensor:
        """[B, count, 3, size, size]: ``group.count`` views of each image (rows crop-major inside)."""
        cfg = self.cfg
        count, size = group.count, group.size
        b = idx.shape[0]
        n = b * count
        device = self.images.device
        _, _, height, width = self.images.shape
        src = self.images.index_select(0, idx).float().div_(255).repeat(count, 1, 1, 1)  # crop-major rows
        boxes = resized_crop_params(n, height, width, group.scale, gen)
        flips = torch.rand(n, generator=gen, device=device) < cfg.flip_prob
        x = F.grid_sample(src, crop_grid(boxes, flips, size, height, width), mode=self.mode,
                          padding_mode="border", align_corners=False).clamp_(0, 1)

        bri, con, sat, hue = cfg.color_jitter
        jitter = torch.rand(n, generator=gen, device=device) < cfg.color_jitter_prob
        factors = torch.stack([_uniform(n, max(0.0, 1 - bri), 1 + bri, gen, device),
                               _uniform(n, max(0.0, 1 - con), 1 + con, gen, device),
                               _uniform(n, max(0.0, 1 - sat), 1 + sat, gen, device),
                               _uniform(n, -hue, hue, gen, device)])
        order = torch.rand(n, 4, generator=gen, device=device).argsort(dim=1)  # a random order per crop
        active = [bri > 0, con > 0, sat > 0, hue > 0]
        for position in range(4):
            for op in range(4):
                if active[op]:
                    sel = (jitter & (order[:, position] == op)).view(-1, 1, 1, 1)
                    x = torch.where(sel, COLOR_OPS[op](x, factors[op]), x)

        gray = torch.rand(n, generator=gen, device=device) < cfg.grayscale_prob
        x = torch.where(gray.view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)

        blur = torch.rand(n, generator=gen, device=device) < group.blur_prob.repeat_interleave(b)  # crop-major rows
        sigma = _uniform(n, cfg.blur_radius[0], cfg.blur_radius[1], gen, device).clamp_min(1e-3)
        if group.blurs:
            x = torch.where(blur.view(-1, 1, 1, 1), gaussian_blur(x, sigma, self.blur_radius_px), x)

        solar = torch.rand(n, generator=gen, device=device) < group.solarize_prob.repeat_interleave(b)
        if group.solarises:
            x = torch.where(solar.view(-1, 1, 1, 1) & (x >= SOLARIZE_THRESHOLD), 1 - x, x)

        x = (x - self.mean) / self.std
        return x.view(count, b, 3, size, size).transpose(0, 1)
