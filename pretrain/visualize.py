"""The paper's qualitative figure: per image, the teacher's attention map and the masks of every strategy.

For each image (resized to ``img_size`` on the shorter side and centre-cropped), one PNG row: the
image, the teacher's last-block CLS→patch attention (head-averaged, as AttMask uses it), then the
masks of AttMask-High, -Hint, -Low, random and block-wise masking at the same ratio (masked patches
greyed out; Hint's revealed tokens outlined). AttMask masks are drawn with gating probability 1 so
every panel shows a mask. Source: AttMask (ECCV 2022) Fig. 1 / Fig. 4.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from attmask.eval.checkpoint import load_backbone
from attmask.eval.datasets import index_images
from attmask.eval.errors import BadInput
from attmask.eval.transforms import IMAGENET_MEAN, IMAGENET_STD

from .masking import attmask, block_mask, random_mask
from .vit import backbone_forward

PANELS = ("attmask_high", "attmask_hint", "attmask_low", "rand", "block")
TITLES = {"attmask_high": "AttMask-High", "attmask_hint": "AttMask-Hint", "attmask_low": "AttMask-Low",
          "rand": "random", "block": "block-wise"}


def strategy_masks(attention: torch.Tensor, grid: tuple[int, int], ratio: float, show_max: float,
                   generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Masks [h, w] bool of every strategy for one image; ``attention`` [h·w] (its CLS row)."""
    att = attention.reshape(1, -1)
    out = {}
    for shape in ("attmask_high", "attmask_hint", "attmask_low"):
        m = attmask(att, shape, ratio, masking_prob=1.0, show_ratio=show_max * ratio, show_max=show_max,
                    generator=generator)
        out[shape] = m.reshape(grid)
    out["rand"] = random_mask(grid, ratio, generator)
    out["block"] = block_mask(grid, ratio, generator)
    return out


def _overlay(image: np.ndarray, mask: np.ndarray, patch: int) -> np.ndarray:
    """Grey out masked patches of ``image`` [H, W, 3] in [0, 1]."""
    up = np.kron(mask.astype(np.float32), np.ones((patch, patch), dtype=np.float32))[..., None]
    return image * (1 - up) + 0.5 * up


def render(image: np.ndarray, attention: np.ndarray, masks: dict[str, np.ndarray], patch: int,
           hints: np.ndarray | None, path: Path) -> Path:
    """Write one row of panels (image, attention, masks) to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 + len(masks)
    fig, axes = plt.subplots(1, panels, figsize=(2.2 * panels, 2.5))
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(image)
    h, w = image.shape[:2]
    axes[1].imshow(attention, cmap="inferno", alpha=0.6, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                   interpolation="nearest")
    axes[1].set_title("teacher attention", fontsize=9)
    for ax, (name, mask) in zip(axes[2:], masks.items()):
        ax.imshow(_overlay(image, mask, patch))
        if name == "attmask_hint" and hints is not None:
            for r, c in zip(*np.nonzero(hints)):
                ax.add_patch(plt.Rectangle((c * patch - 0.5, r * patch - 0.5), patch, patch, fill=False,
                                           edgecolor="lime", linewidth=1.0))
        ax.set_title(f"{TITLES[name]} ({mask.mean():.0%})", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def visualize(ckpt: str, images: str | os.PathLike[str], out: str | os.PathLike[str], *,
              checkpoint_key: str = "teacher", img_size: int | None = None, ratio: float = 0.3,
              show_max: float = 0.1, seed: int = 0, limit: int | None = None) -> list[Path]:
    """One PNG per image of the folder ``images`` into ``out``; returns the written paths."""
    if not 0 < ratio <= 1:
        raise BadInput(None, f"--ratio {ratio} is not in (0, 1]")
    bb = load_backbone(ckpt, checkpoint_key=checkpoint_key)
    model = bb.model.eval()
    size = img_size or bb.info.arch.img_size
    patch = bb.info.arch.patch_size
    if size % patch:
        raise BadInput(None, f"--img-size {size} is not a multiple of the patch size {patch}")
    index = index_images(images)
    paths = list(index.paths)[:limit] if limit else list(index.paths)
    crop = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)])
    normalize = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    grid = (size // patch, size // patch)
    out = Path(out)
    written = []
    for rel in paths:
        src = Path(index.root) / rel
        try:
            with Image.open(src) as img:
                pil = crop(img.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise BadInput(src, f"cannot read image ({exc})") from None
        with torch.inference_mode():
            attention = backbone_forward(model, normalize(pil)[None], cls_attention=True).cls_attention[0]
        gen = torch.Generator().manual_seed(seed)
        masks = strategy_masks(attention, grid, ratio, show_max, gen)
        high = attmask(attention[None], "attmask_high", ratio, masking_prob=1.0, generator=gen).reshape(grid)
        hints = (high & ~masks["attmask_hint"]).numpy()
        image = np.asarray(pil, dtype=np.float32) / 255.0
        name = rel.rsplit(".", 1)[0].replace("/", "__") + ".png"
        written.append(render(image, attention.reshape(grid).numpy(), {k: v.numpy() for k, v in masks.items()},
                              patch, hints, out / name))
    return written
