"""Evaluation transforms as a hashable spec (it is part of the feature-cache key and the protocol)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR,
                  "nearest": T.InterpolationMode.NEAREST}


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side to ``resize``, center-crop ``crop``, normalise (DINO's eval transform)."""

    resize: int = 256
    crop: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def is_reference(self) -> bool:
        return self == EvalTransform()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def build(self) -> T.Compose:
        return T.Compose([
            T.Resize(self.resize, interpolation=INTERPOLATIONS[self.interpolation]),
            T.CenterCrop(self.crop),
            T.ToTensor(),
            T.Normalize(self.mean, self.std),
        ])


def add_transform_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("transform (reference: resize 256 bicubic, center crop 224)")
    g.add_argument("--resize", type=int, default=256, help="shorter side after resizing (default: 256)")
    g.add_argument("--crop", type=int, default=224, help="center-crop size (default: 224)")
    g.add_argument("--interpolation", choices=sorted(INTERPOLATIONS), default="bicubic",
                   help="resize interpolation (default: bicubic)")


def transform_from_args(args: argparse.Namespace) -> EvalTransform:
    return EvalTransform(resize=args.resize, crop=args.crop, interpolation=args.interpolation)
