"""The DeiT fine-tuning recipe as AttMask's ``eval_transfer_finetuning.py`` runs it, built from timm.

Settings (``FinetuneRecipe`` defaults = the AttMask README run on CIFAR-10/100, ViT-S/16):
224 px; RandAugment ``rand-m9-mstd0.5-inc1``, bicubic, colour jitter 0.4, random erasing 0.25
(pixel mode, one box); inputs of 32 px or less use RandomCrop(size, padding 4) instead of the
RandomResizedCrop (as DeiT's ``build_transform``); mixup 0.8 / cutmix 1.0 (prob 1, switch 0.5,
per batch) with label smoothing 0.1 and soft-target cross-entropy; drop-path 0.1; AdamW (eps 1e-8,
weight decay 0.05, none on biases, norms, ``pos_embed`` and ``cls_token``), lr 7.5e-6 × total
batch / 512 (README: 6 GPUs × 150), 5 warm-up epochs from 1e-6, cosine to 1e-5 per epoch;
repeated augmentation (3 repeats, timm's ``RepeatAugSampler``); model EMA 0.99996 kept alongside
(as the reference, the reported accuracy is the model's, not the EMA's); 500 epochs, evaluation
every 50 epochs and after the last; optional layer-wise lr decay (off in the reference).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torchvision import transforms as T

from .transforms import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class FinetuneRecipe:
    epochs: int = 500
    train_batch_size: int = 900  # total over processes (README: 6 x 150)
    base_lr: float = 7.5e-6  # times total batch / 512
    weight_decay: float = 0.05
    warmup_epochs: int = 5
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.4
    train_interpolation: str = "bicubic"
    random_erase: float = 0.25
    mixup: float = 0.8
    cutmix: float = 1.0
    label_smoothing: float = 0.1
    drop_path: float = 0.1
    model_ema: bool = True
    model_ema_decay: float = 0.99996
    repeated_aug: bool = True
    layer_decay: float | None = None
    eval_freq: int = 50
    amp: bool = True  # on CUDA only

    @property
    def lr(self) -> float:
        return self.base_lr * self.train_batch_size / 512.0

    @property
    def mixup_active(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lr": self.lr}


@dataclass(frozen=True)
class FinetuneTrainTransform:
    """timm's training transform of the recipe at ``size`` px (a spec with ``build()``, like EvalTransform)."""

    size: int
    auto_augment: str | None
    color_jitter: float
    interpolation: str
    random_erase: float

    def build(self) -> T.Compose:
        from timm.data import create_transform

        tf = create_transform(input_size=self.size, is_training=True, color_jitter=self.color_jitter,
                              auto_augment=self.auto_augment, interpolation=self.interpolation,
                              re_prob=self.random_erase, re_mode="pixel", re_count=1,
                              mean=IMAGENET_MEAN, std=IMAGENET_STD)
        if self.size <= 32:  # DeiT: small inputs are padded and cropped, not resized
            tf.transforms[0] = T.RandomCrop(self.size, padding=4)
        return tf


def train_transform(recipe: FinetuneRecipe, size: int) -> FinetuneTrainTransform:
    return FinetuneTrainTransform(size=size, auto_augment=recipe.auto_augment, color_jitter=recipe.color_jitter,
                                  interpolation=recipe.train_interpolation, random_erase=recipe.random_erase)


def mixup_fn(recipe: FinetuneRecipe, num_classes: int):
    """timm ``Mixup`` (mixup + cutmix + label smoothing into soft targets), or None when both are off."""
    if not recipe.mixup_active:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, prob=1.0, switch_prob=0.5, mode="batch",
                 label_smoothing=recipe.label_smoothing, num_classes=num_classes)


def criterion(recipe: FinetuneRecipe) -> nn.Module:
    """Soft-target CE with mixup; label-smoothing CE without; plain CE when both are off (as DeiT)."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if recipe.mixup_active:
        return SoftTargetCrossEntropy()
    if recipe.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=recipe.label_smoothing)
    return nn.CrossEntropyLoss()


def optimizer(recipe: FinetuneRecipe, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW without decay on 1-D parameters and ``no_weight_decay()`` names; layer-wise decay if set."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, opt="adamw", lr=recipe.lr, weight_decay=recipe.weight_decay, eps=1e-8,
                               layer_decay=recipe.layer_decay)


def scheduler(recipe: FinetuneRecipe, opt: torch.optim.Optimizer):
    """Per-epoch cosine with linear warm-up (timm ``CosineLRScheduler``); call ``step(epoch)``."""
    from timm.scheduler import CosineLRScheduler

    return CosineLRScheduler(opt, t_initial=recipe.epochs, lr_min=recipe.min_lr, warmup_t=recipe.warmup_epochs,
                             warmup_lr_init=recipe.warmup_lr, cycle_limit=1, t_in_epochs=True)
