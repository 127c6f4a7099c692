"""One iBOT / DINO training iteration with AttMask or baseline masking (``train_one_epoch`` of the reference).

Order of operations, as ``main_attmask.py``:

1. teacher forward on the unmasked global crops -> CLS (and patch) logits and, for AttMask, the
   last block's CLS→patch attention from the same pass;
2. masks: AttMask from that attention (ratio drawn once per iteration, per-crop gating), or the
   per-crop baseline masks drawn by the data loader, or none;
3. student forward: masked global crops + local crops (one backbone pass per resolution);
4. loss, backward (grad scaler for fp16), per-parameter clipping at ``clip_grad``, last-layer
   gradients dropped during the first ``freeze_last_layer`` epochs, optimizer step;
5. teacher EMA with the scheduled momentum.

Randomness of a step (drop-path, AttMask gating, hints, ratio draws, and the crops under
``augment_on: device``) comes from generators seeded by
``(seed, rank, step)``, so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attmask.eval import distributed as dist

from .batch_augment import DeviceMultiCrop
from .config import PretrainConfig
from .data import crop_major, mixed_seed
from .heads import masked_rows
from .losses import TEACHER_STATS, DINOLoss, iBOTLoss
from .masking import attmask, draw_pred_ratio
from .network import PretrainNet
from .optim import cancel_last_layer_gradients, clip_gradients, ema_update, set_schedule_values


def step_seed(seed: int, rank: int, step: int, stream: int) -> int:
    """The seed of one random stream (drop-path, ratios, masks, crops) of one step on one rank."""
    return mixed_seed(seed, rank, step, stream)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stops without saving."""


@dataclass
class StepState:
    """Everything a step touches (built once by the trainer)."""

    cfg: PretrainConfig
    student: nn.Module  # possibly DDP-wrapped
    student_net: PretrainNet  # unwrapped
    teacher: PretrainNet
    loss_fn: iBOTLoss | DINOLoss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    ema_student: list[torch.Tensor]
    ema_teacher: list[torch.Tensor]
    device: torch.device
    amp_dtype: torch.dtype | None
    rank: int = 0
    augmenter: DeviceMultiCrop | None = None  # augment_on: device (the batch holds image indices)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def make_masks(cfg: PretrainConfig, epoch: int, attention: torch.Tensor | None, loader_masks: torch.Tensor,
               grid: tuple[int, int], ratio_gen: torch.Generator, mask_gen: torch.Generator) -> tuple[torch.Tensor | None, float]:
    """Masks [G·B, h, w] bool for the student's global crops and the AttMask ratio r (0 for baselines).

    ``attention`` [G·B, n] (AttMask modes); ``loader_masks`` [B, G, h, w] (``rand`` / ``block``).
    """
    if not cfg.masks_student:
        return None, 0.0
    if cfg.attention_guided:
        assert attention is not None
        if epoch < cfg.pred_start_epoch:
            return torch.zeros(attention.shape[0], *grid, dtype=torch.bool, device=attention.device), 0.0
        ratio = draw_pred_ratio(cfg.pred_ratio, cfg.pred_ratio_var, ratio_gen)
        show_ratio = 0.0
        if cfg.pred_shape == "attmask_hint":
            show_ratio = cfg.show_max * draw_pred_ratio(cfg.pred_ratio, cfg.pred_ratio_var, ratio_gen)
        masks = attmask(attention, cfg.pred_shape, ratio, masking_prob=cfg.masking_prob, show_ratio=show_ratio,
                        show_max=cfg.show_max, generator=mask_gen)
        return masks.reshape(attention.shape[0], *grid), ratio
    return crop_major(loader_masks), 0.0


def train_step(st: StepState, batch: tuple[torch.Tensor, ...], *, step: int, epoch: int, lr: float, wd: float,
               momentum: float) -> dict[str, float]:
    """Run iteration ``step`` (0-based, global) of ``epoch``; returns logged scalars (averaged over ranks)."""
    cfg = st.cfg
    global_crops, local_crops, loader_masks = batch[0], batch[1], batch[2]
    set_schedule_values(st.optimizer, lr, wd)
    if st.augmenter is not None:  # batch[0] holds the image indices
        aug_gen = torch.Generator(device=st.device).manual_seed(step_seed(cfg.seed, st.rank, step, 3))
        global_crops, local_crops = st.augmenter(global_crops, aug_gen)
    g = crop_major(global_crops).to(st.device, non_blocking=True)
    loc = crop_major(local_crops).to(st.device, non_blocking=True) if local_crops.shape[1] > 0 else None
    grid = (cfg.global_crops_size // cfg.patch_size,) * 2
    torch.manual_seed(step_seed(cfg.seed, st.rank, step, 0))  # drop-path
    ratio_gen = torch.Generator().manual_seed(step_seed(cfg.seed, st.rank, step, 1))
    mask_gen = torch.Generator(device=st.device).manual_seed(step_seed(cfg.seed, st.rank, step, 2))
    ibot = isinstance(st.loss_fn, iBOTLoss)

    with st.autocast():
        with torch.no_grad():
            t_out = st.teacher(g, patch="bottleneck" if ibot else "none",
                               cls_attention=cfg.attention_guided and cfg.masks_student)
        masks, ratio = make_masks(cfg, epoch, t_out.cls_attention, loader_masks, grid, ratio_gen, mask_gen)
        if masks is not None:
            masks = masks.to(st.device, non_blocking=True)
        if ibot:
            if masks is None:  # no masking: the patch loss runs over zero tokens (= 0), as the reference
                masks = torch.zeros(g.shape[0], *grid, dtype=torch.bool, device=st.device)
            with torch.no_grad():  # teacher targets of the masked tokens, and each crop's mean logits
                last = st.teacher.head.last_layer2
                t_patch = last(masked_rows(t_out.patch, masks))
                t_patch_mean = last(t_out.patch.float().mean(dim=1))
            s_out = st.student(g, loc, masks, patch="masked")
            losses = st.loss_fn(s_out.cls, s_out.patch, t_out.cls, t_patch, t_patch_mean, masks, epoch)
        else:
            s_out = st.student(g, loc, masks, patch="none")
            losses = st.loss_fn(s_out.cls, t_out.cls, epoch)

    names = ["loss", "cls", "patch"] + [k for k in TEACHER_STATS if k in losses]
    scalars = torch.stack([losses[k].detach().float() for k in names]
                          + [masks.float().mean() if masks is not None else torch.zeros((), device=st.device)])
    scalars = dist.all_reduce_mean(scalars)
    values = dict(zip(names + ["mask_ratio"], scalars.tolist()))
    if not math.isfinite(values["loss"]):
        raise NonFiniteLoss(f"loss is {values['loss']} at step {step} (epoch {epoch})")

    st.optimizer.zero_grad(set_to_none=True)
    loss = losses["loss"]
    if st.scaler is not None:
        st.scaler.scale(loss).backward()
        if cfg.clip_grad:
            st.scaler.unscale_(st.optimizer)
            clip_gradients(st.student_net, cfg.clip_grad)
        cancel_last_layer_gradients(st.student_net, epoch, cfg.freeze_last_layer)
        st.scaler.step(st.optimizer)
        st.scaler.update()
    else:
        loss.backward()
        if cfg.clip_grad:
            clip_gradients(st.student_net, cfg.clip_grad)
        cancel_last_layer_gradients(st.student_net, epoch, cfg.freeze_last_layer)
        st.optimizer.step()
    ema_update(st.ema_student, st.ema_teacher, momentum)
    return {**values, "pred_ratio": ratio}
