"""The iBOT projection head (DINO head + a patch branch), with a weight-normalised last layer.

Source: iBOT (Zhou et al., ICLR 2022) ``models/head.py`` ``iBOTHead`` / DINO (Caron et al., ICCV 2021)
``DINOHead``. Layout, key names and initialisation follow the reference so checkpoints match:

- ``mlp``: Linear(D, hidden) - GELU - [Linear(hidden, hidden) - GELU] × (nlayers - 2) - Linear(hidden,
  bottleneck) (``mlp.0``, ``mlp.2``, ``mlp.4`` for 3 layers; a single ``mlp`` Linear for 1 layer),
  weights trunc-normal(0.02), biases 0;
- L2 normalisation of the bottleneck output;
- ``last_layer``: weight-normalised Linear(bottleneck, K) without bias (``weight_g`` [K, 1] filled with
  1, frozen when ``norm_last_layer``; ``weight_v`` [K, bottleneck] with nn.Linear's default init);
- ``last_layer2`` for patch tokens: the same module as ``last_layer`` when the head is shared
  (both names then appear in the state dict, as in the reference), else its own layer of size K'.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ROW_BUCKET = 128


def masked_rows(tokens: torch.Tensor, masks: torch.Tensor, bucket: int = ROW_BUCKET) -> torch.Tensor:
    """The masked tokens of ``tokens`` [C, n, D] (``masks`` [C, n] or [C, h, w] bool), row-major, then
    padding rows (copies of token 0) up to a multiple of ``bucket``: [M', D] with M' >= M = masks.sum().

    M changes every step. On CPU every new size means new oneDNN kernels and new allocator block sizes,
    and a long run's memory then grows by gigabytes; keeping every M-sized tensor (the head's inputs,
    outputs and gradients, the loss terms) to a few sizes avoids that. Callers use only the first M
    rows of whatever they compute from the result.
    """
    index = masks.reshape(-1).nonzero().squeeze(1)
    pad = (-index.shape[0]) % bucket
    if pad or index.shape[0] == 0:
        index = torch.cat([index, index.new_zeros(pad or bucket)])
    return tokens.reshape(-1, tokens.shape[-1])[index]


class WeightNormLinear(nn.Module):
    """``nn.utils.weight_norm(nn.Linear(in, out, bias=False))`` with the same parameter names.

    weight = weight_g · weight_v / ‖weight_v‖ (norm of each output row). ``x`` [..., in] -> [..., out].
    """

    def __init__(self, in_features: int, out_features: int, norm_last_layer: bool = True) -> None:
        super().__init__()
        v = torch.empty(out_features, in_features)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))  # nn.Linear's default init
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(torch.ones(out_features, 1))
        self.weight_g.requires_grad = not norm_last_layer

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=1, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


def _mlp(in_dim: int, hidden_dim: int, bottleneck_dim: int, nlayers: int, act: str) -> nn.Module:
    act_layer = {"gelu": nn.GELU, "relu": nn.ReLU}[act]
    if nlayers == 1:
        return nn.Linear(in_dim, bottleneck_dim)
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), act_layer()]
    for _ in range(nlayers - 2):
        layers += [nn.Linear(hidden_dim, hidden_dim), act_layer()]
    layers.append(nn.Linear(hidden_dim, bottleneck_dim))
    return nn.Sequential(*layers)


class iBOTHead(nn.Module):  # the reference name
    """Projection head for CLS tokens ([N, D] -> [N, K]) and patch tokens ([M, D] -> [M, K']).

    ``patch_out_dim`` None builds a CLS-only (DINO) head without ``last_layer2``.
    """

    def __init__(self, in_dim: int, out_dim: int, patch_out_dim: int | None = None, *, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, nlayers: int = 3, norm_last_layer: bool = True,
                 shared_head: bool = True, act: str = "gelu") -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError("the head needs at least one layer")
        self.mlp = _mlp(in_dim, hidden_dim, bottleneck_dim, nlayers, act)
        self.apply(self._init_weights)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, norm_last_layer)
        if patch_out_dim is None:
            self.last_layer2 = None
        elif shared_head:
            if patch_out_dim != out_dim:
                raise ValueError(f"a shared head has one output size: patch_out_dim {patch_out_dim} != out_dim {out_dim}")
            self.last_layer2 = self.last_layer
        else:
            self.last_layer2 = WeightNormLinear(bottleneck_dim, patch_out_dim, norm_last_layer)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """[..., D] -> L2-normalised [..., bottleneck]."""
        return F.normalize(self.mlp(x), dim=-1, p=2)

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        """CLS tokens [N, D] -> logits [N, K]."""
        return self.last_layer(self.bottleneck(x))

    def forward_patch(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens [..., D] -> logits [..., K']."""
        if self.last_layer2 is None:
            raise RuntimeError("this head has no patch branch (built for the DINO loss)")
        return self.last_layer2(self.bottleneck(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_cls(x)
