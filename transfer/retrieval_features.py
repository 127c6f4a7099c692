"""Global image descriptors for revisited Oxford / Paris retrieval.

Reference pipeline (DINO ``eval_image_retrieval.py`` + ``utils.multi_scale``, which iBOT and AttMask
use unchanged; revisitop for the query crop):

1. Read the image as RGB. Queries are cropped to their ground-truth ``bbx`` first when
   ``query_crop`` is on (revisitop's official protocol; DINO / iBOT skip it).
2. ``PIL.Image.thumbnail((imsize, imsize), LANCZOS)``: the longer side becomes at most ``imsize``,
   aspect kept, never upsampled.
3. ``ToTensor`` + ImageNet normalisation (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225).
4. One image per forward (sizes differ). Multi-scale: the descriptor is computed at scales
   1, 1/√2 and 1/2 (``F.interpolate(bilinear, align_corners=False)`` with ``scale_factor``) and the
   three are averaged.
5. Descriptor: ``cls`` = CLS token of the last block after the final norm (the reference); or
   ``gem`` = generalised-mean pooling of the last block's patch tokens (after the final norm),
   ``(mean(clamp(x, eps)^p))^(1/p)`` per channel (Radenović et al., TPAMI 2019; p = 3 default).
6. L2-normalised.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import functional as TF
from tqdm import tqdm

from attmask.eval.errors import BadInput
from attmask.eval.features import forward_layers
from attmask.eval.transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

MULTISCALE = (1.0, 1.0 / 2 ** 0.5, 0.5)
POOLINGS = ("cls", "gem")


@dataclass(frozen=True)
class DescriptorOptions:
    imsize: int = 512
    multiscale: bool = True
    pooling: str = "cls"
    gem_p: float = 3.0

    @property
    def scales(self) -> tuple[float, ...]:
        return MULTISCALE if self.multiscale else (1.0,)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImageItem:
    path: Path
    bbx: tuple[float, float, float, float] | None = None  # crop box (x1, y1, x2, y2) applied first


def load_image(item: ImageItem, imsize: int) -> Image.Image:
    """RGB image, cropped to ``item.bbx`` (if any), then thumbnailed to at most ``imsize``."""
    try:
        with Image.open(item.path) as im:
            img = im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise BadInput(item.path, f"cannot read image ({exc})") from None
    if item.bbx is not None:
        # PIL rounds float boxes to the nearest pixel, as revisitop's crop does
        img = img.crop(item.bbx)
    img.thumbnail((imsize, imsize), Image.Resampling.LANCZOS)
    return img


class RetrievalImages(Dataset):
    """Normalised image tensors [3, H, W] (H, W vary) of ``items`` in order."""

    def __init__(self, items: Sequence[ImageItem], imsize: int) -> None:
        self.items = list(items)
        self.imsize = imsize

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = load_image(self.items[i], self.imsize)
        x = TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)
        return x, i


def gem(tokens: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean over tokens: [B, N, D] -> [B, D], ``(mean(clamp(x, eps)^p))^(1/p)``."""
    return tokens.clamp(min=eps).pow(p).mean(dim=1).pow(1.0 / p)


def crop_to_patch_multiple(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Drop the bottom / right pixels that do not fill a whole patch: [B, C, H, W] -> [B, C, H', W'].

    The reference ViT's stride-``p`` patch convolution ignores them; timm's patch embedding
    refuses such inputs instead, so cropping reproduces the reference exactly.
    """
    h, w = images.shape[-2:]
    return images[..., : h - h % patch_size, : w - w % patch_size]


def pooled(model: nn.Module, images: torch.Tensor, pooling: str, gem_p: float) -> torch.Tensor:
    """Descriptor before normalisation for ``images`` [B, 3, H, W]: [B, D]."""
    if pooling == "cls":
        return forward_layers(model, images, "cls")
    if pooling == "gem":
        return gem(forward_layers(model, images, "patch"), p=gem_p)
    raise BadInput(None, f"unknown pooling {pooling!r} (choose from {', '.join(POOLINGS)})")


def describe(model: nn.Module, image: torch.Tensor, options: DescriptorOptions, patch_size: int,
             name: str = "image") -> torch.Tensor:
    """L2-normalised descriptor [B, D] of ``image`` [B, 3, H, W], averaged over ``options.scales``."""
    total: torch.Tensor | None = None
    for s in options.scales:
        x = image if s == 1.0 else F.interpolate(image, scale_factor=s, mode="bilinear", align_corners=False)
        if x.shape[-1] < patch_size or x.shape[-2] < patch_size:
            raise BadInput(name, f"{image.shape[-1]}x{image.shape[-2]} px becomes {x.shape[-1]}x{x.shape[-2]} "
                                 f"at scale {s:.3f}, smaller than the {patch_size}-px patch; raise --imsize "
                                 "(or use --no-multiscale)")
        d = pooled(model, crop_to_patch_multiple(x, patch_size), options.pooling, options.gem_p).float()
        total = d if total is None else total + d
    assert total is not None
    return F.normalize(total / len(options.scales), dim=-1)


def extract_descriptors(model: nn.Module, items: Sequence[ImageItem], options: DescriptorOptions,
                        device: torch.device, num_workers: int = 0, desc: str = "descriptors") -> np.ndarray:
    """Descriptors [N, D] float32 (L2-normalised) of ``items``, in order. One image per forward."""
    if not items:
        raise BadInput(None, f"no images to describe ({desc})")
    patch = model.patch_embed.patch_size
    patch_size = int(patch[0] if isinstance(patch, tuple | list) else patch)
    loader = DataLoader(RetrievalImages(items, options.imsize), batch_size=1, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    model = model.to(device).eval()
    out: list[torch.Tensor] = []
    with torch.inference_mode():
        for image, index in tqdm(loader, desc=desc, unit="img", leave=False):
            name = str(items[int(index[0])].path)
            out.append(describe(model, image.to(device, non_blocking=True), options, patch_size, name).cpu())
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def code_version() -> str:
    """Hash of this module's source: part of the feature-cache key of retrieval descriptors."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
