"""Student / teacher network: backbone + head over multi-crop inputs, crops batched per resolution.

Equivalent of the reference ``MultiCropWrapper`` (DINO / iBOT), restricted to what the objectives
use so no work is wasted:

- global crops [G·B, 3, H, W] (crop-major: all images' crop 0, then crop 1, ...) go through the
  backbone in one pass, optionally masked; local crops [L·B, 3, h, w] in a second pass;
- the head sees the CLS token of every crop, and patch tokens either ``all``, or only the ``masked``
  ones (the student: the patch loss sums over masked tokens only, so projecting the others is wasted
  work), or ``bottleneck`` (the teacher: the L2-normalised bottleneck of every patch token; the last
  layer is linear without bias, so the training step applies it to the masked tokens for the
  targets and to the per-crop mean for the patch center, mean(W·z) = W·mean(z), instead of
  projecting all G·B·n tokens to K' dimensions), or ``none`` (DINO).
- the teacher's last-block CLS→patch attention [G·B, n] comes out of the same pass when asked.

Parameter names are ``backbone.*`` and ``head.*`` as the reference's.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .heads import iBOTHead, masked_rows
from .vit import backbone_forward

PATCH_MODES = ("none", "masked", "all", "bottleneck")


class NetOutput(NamedTuple):
    cls: torch.Tensor  # [(G + L)·B, K] logits of every crop's CLS token (globals first)
    patch: torch.Tensor | None  # "all": [G·B, n, K']; "masked": [M', K'], the first M rows (M = masks.sum())
    #                             the masked tokens in row-major mask order, then padding rows (M' >= M);
    #                             "bottleneck": [G·B, n, bottleneck]; "none": None
    cls_attention: torch.Tensor | None  # [G·B, n] float32 when asked
    num_patches: int  # n, patch tokens per global crop


class PretrainNet(nn.Module):
    def __init__(self, backbone: VisionTransformer, head: iBOTHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor | None = None,
                masks: torch.Tensor | None = None, *, patch: str = "none", cls_attention: bool = False) -> NetOutput:
        """``masks`` [G·B, h, w] bool (True = masked) applies to the global crops only: masked tokens get
        the mask token (when the backbone has one) and select the patch outputs of ``patch="masked"``."""
        if patch not in PATCH_MODES:
            raise ValueError(f"patch mode {patch!r} is not one of {PATCH_MODES}")
        if patch == "masked" and masks is None:
            raise ValueError("patch='masked' needs masks")
        # a student without a mask token (use_masked_im_modeling false) uses masks only to pick tokens
        token_masks = masks if hasattr(self.backbone, "masked_embed") else None
        out = backbone_forward(self.backbone, global_crops, token_masks, cls_attention=cls_attention)
        prefix = self.backbone.num_prefix_tokens
        tokens = out.tokens
        n = tokens.shape[1] - prefix
        cls_tokens = [tokens[:, 0]]
        if local_crops is not None and local_crops.shape[0] > 0:
            cls_tokens.append(backbone_forward(self.backbone, local_crops).tokens[:, 0])
        cls_in = torch.cat(cls_tokens) if len(cls_tokens) > 1 else cls_tokens[0]
        head = self.head
        if patch == "none":
            return NetOutput(head.forward_cls(cls_in), None, out.cls_attention, n)
        patches = tokens[:, prefix:]
        if patch == "masked":
            assert masks is not None
            patches = masked_rows(patches, masks)  # [M', D], padded to a bucket (heads.masked_rows)
        # one pass through the MLP for CLS and patch tokens (shared weights), then the last layers
        flat = patches.reshape(-1, patches.shape[-1])
        z = head.bottleneck(torch.cat([cls_in, flat]))
        if patch == "bottleneck":
            z_patch = z[cls_in.shape[0]:].reshape(tokens.shape[0], n, -1)
            return NetOutput(head.last_layer(z[: cls_in.shape[0]]), z_patch, out.cls_attention, n)
        if head.last_layer2 is None:
            raise RuntimeError("patch outputs were asked of a head without a patch branch")
        if head.last_layer2 is head.last_layer:
            logits = head.last_layer(z)
            cls_logits, patch_logits = logits[: cls_in.shape[0]], logits[cls_in.shape[0]:]
        else:
            cls_logits = head.last_layer(z[: cls_in.shape[0]])
            patch_logits = head.last_layer2(z[cls_in.shape[0]:])
        if patch == "all":
            patch_logits = patch_logits.reshape(tokens.shape[0], n, -1)
        return NetOutput(cls_logits, patch_logits, out.cls_attention, n)
