"""Masking strategies as pure functions, named by the reference's ``pred_shape`` values.

Sources: AttMask (Kakogeorgiou et al., ECCV 2022, arXiv 2203.12719; ``attmask.py`` and ``loader.py``
of gkakogeorgiou/attmask), iBOT (Zhou et al., ICLR 2022) and BEiT (Bao et al., ICLR 2022) for the
block-wise baseline. ../shared/reference/PROTOCOLS.md §1 has the settings.

- ``attmask_high``: mask the N = floor(n·r) tokens the teacher's CLS attends to most.
- ``attmask_low``: mask the N least-attended tokens.
- ``attmask_hint``: the High mask, then reveal floor(n·show_max·r₂) tokens drawn uniformly (without
  replacement) among the floor(n·show_max) most-attended ones.
- AttMask modes gate each crop independently: masked with probability ``masking_prob`` (0.5), else
  not at all. r (and r₂) are drawn once per iteration and shared by the batch.
- ``rand``: N = floor(n·r) tokens uniformly at random, r drawn per crop.
- ``block``: BEiT block-wise masking until at least n·r tokens are covered, r drawn per crop.
- ``none``: nothing is masked.

Every function takes an explicit ``torch.Generator``; the same generator state gives the same mask.
Masks are boolean, ``True`` = masked (replaced by the mask token, predicted by the patch loss).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .config import ATTMASK_SHAPES, PRED_SHAPE_ALIASES, PRED_SHAPES

__all__ = [
    "ATTMASK_SHAPES", "PRED_SHAPES", "attmask", "attention_topk_mask", "block_mask", "canonical_shape",
    "draw_pred_ratio", "hint_reveal", "num_masked", "random_mask",
]


def canonical_shape(pred_shape: str) -> str:
    """``random`` -> ``rand``; unknown names raise ``ValueError`` listing the valid ones."""
    shape = PRED_SHAPE_ALIASES.get(pred_shape, pred_shape)
    if shape not in PRED_SHAPES:
        raise ValueError(f"unknown pred_shape {pred_shape!r} (valid: {', '.join(PRED_SHAPES)}, random)")
    return shape


def num_masked(num_tokens: int, ratio: float) -> int:
    """N = floor(n·r), as the reference's ``int(n * r)``."""
    return int(math.floor(num_tokens * ratio))


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    return low + (high - low) * u


def draw_pred_ratio(pred_ratio: float | Sequence[float], pred_ratio_var: float | Sequence[float],
                    generator: torch.Generator) -> float:
    """One masking ratio, as the reference ``ImageFolderMask.get_pred_ratio``.

    A scalar ``pred_ratio`` r with variance v gives U(r - v, r + v) (r itself when v = 0). Lists (iBOT's
    ``--pred_ratio 0 0.3 --pred_ratio_var 0 0.2``) draw one value per entry and pick one uniformly: with
    those values a crop is unmasked with probability 0.5, else masked with r ~ U(0.1, 0.5).
    """
    if isinstance(pred_ratio, (int, float)):
        ratios = [float(pred_ratio)]
        variances = [float(pred_ratio_var)] if isinstance(pred_ratio_var, (int, float)) else list(pred_ratio_var)
    else:
        ratios = [float(r) for r in pred_ratio]
        variances = ([float(pred_ratio_var)] * len(ratios) if isinstance(pred_ratio_var, (int, float))
                     else [float(v) for v in pred_ratio_var])
    if len(ratios) != len(variances):
        raise ValueError(f"pred_ratio {pred_ratio} and pred_ratio_var {pred_ratio_var} differ in length")
    draws = [_uniform(r - v, r + v, generator) if v > 0 else r for r, v in zip(ratios, variances)]
    if len(draws) == 1:
        return draws[0]
    pick = int(torch.randint(len(draws), (), generator=generator))
    return draws[pick]


def attention_topk_mask(attention: torch.Tensor, count: int, largest: bool = True) -> torch.Tensor:
    """Boolean [B, n] mask of the ``count`` most (``largest``) or least attended tokens of each row.

    ``attention``: [B, n] CLS→patch attention (any real dtype). Ties are broken by a stable sort on
    the token index, so the result is deterministic.
    """
    if attention.ndim != 2:
        raise ValueError(f"attention must be [B, n], got {list(attention.shape)}")
    b, n = attention.shape
    count = max(0, min(int(count), n))
    mask = torch.zeros((b, n), dtype=torch.bool, device=attention.device)
    if count == 0:
        return mask
    order = torch.sort(attention.float(), dim=1, descending=largest, stable=True).indices[:, :count]
    return mask.scatter_(1, order, True)


def hint_reveal(attention: torch.Tensor, mask: torch.Tensor, show_ratio: float, show_max: float,
                generator: torch.Generator) -> torch.Tensor:
    """AttMask-Hint: unmask floor(n·show_ratio) tokens chosen uniformly among the top floor(n·show_max).

    ``attention`` [B, n], ``mask`` [B, n] bool (the High mask); returns a new mask. ``show_ratio`` is
    ``show_max · r₂`` in the reference. Rows that are not masked at all stay unmasked.
    """
    b, n = attention.shape
    num_top = num_masked(n, show_max)
    top = attention_topk_mask(attention, num_top, largest=True)
    reveal = min(num_masked(n, show_ratio), num_top)
    out = mask.clone()
    if reveal <= 0:
        return out
    # uniform sampling without replacement among the top set: random keys, top set first
    keys = torch.rand((b, n), generator=generator, device=attention.device)
    keys = keys.masked_fill(~top, 2.0)
    chosen = torch.argsort(keys, dim=1)[:, :reveal]
    out.scatter_(1, chosen, False)
    return out


def attmask(attention: torch.Tensor, pred_shape: str, ratio: float, *, masking_prob: float = 0.5,
            show_ratio: float = 0.0, show_max: float = 0.1, generator: torch.Generator) -> torch.Tensor:
    """AttMask High / Low / Hint for a batch of crops.

    Args:
        attention: [B, n] the teacher's last-block CLS→patch attention, head-averaged, of each crop.
        pred_shape: ``attmask_high``, ``attmask_low`` or ``attmask_hint``.
        ratio: r, shared by the batch (drawn once per iteration).
        masking_prob: each crop is masked with this probability, independently (gating).
        show_ratio: ``show_max · r₂`` for Hint (r₂ a second ratio draw).
        show_max: Hint's top fraction from which hints are drawn (0.1).
        generator: source of the gating and the hint draws.

    Returns: [B, n] bool, ``True`` = masked.
    """
    shape = canonical_shape(pred_shape)
    if shape not in ATTMASK_SHAPES:
        raise ValueError(f"attmask() needs an attention-guided pred_shape, not {pred_shape!r}")
    b, n = attention.shape
    mask = attention_topk_mask(attention, num_masked(n, ratio), largest=shape != "attmask_low")
    gate = torch.rand((b,), generator=generator, device=attention.device) < masking_prob
    mask &= gate[:, None]
    if shape == "attmask_hint":
        mask = hint_reveal(attention, mask, show_ratio, show_max, generator)
    return mask


def random_mask(grid: tuple[int, int], ratio: float, generator: torch.Generator) -> torch.Tensor:
    """[h, w] bool with exactly floor(h·w·r) masked positions chosen uniformly (iBOT ``rand``)."""
    h, w = grid
    n = h * w
    count = num_masked(n, ratio)
    perm = torch.randperm(n, generator=generator)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[perm[:count]] = True
    return mask.reshape(h, w)


def block_mask(grid: tuple[int, int], ratio: float, generator: torch.Generator,
               aspect_ratio: tuple[float, float] = (0.3, 1 / 0.3), max_attempts: int = 10) -> torch.Tensor:
    """[h, w] bool BEiT block-wise mask covering at least h·w·r positions when it can (iBOT ``block``).

    Blocks of area U((min(h, w) // 3)², remaining) and log-uniform aspect ratio are placed at random;
    a block is kept only when it adds between 1 and ``remaining`` new positions; 10 failed attempts
    in a row end the mask (so it may stay below the target), as BEiT's ``MaskingGenerator``.
    """
    h, w = grid
    target = ratio * h * w
    mask = torch.zeros((h, w), dtype=torch.bool)
    log_lo, log_hi = math.log(aspect_ratio[0]), math.log(aspect_ratio[1])
    min_area = (min(h, w) // 3) ** 2
    count = 0
    while count < target:
        remaining = target - count
        delta = 0
        for _ in range(max_attempts):
            area = _uniform(min_area, remaining, generator)  # random.uniform(a, b) also when b < a
            aspect = math.exp(_uniform(log_lo, log_hi, generator))
            bh = int(round(math.sqrt(area * aspect)))
            bw = int(round(math.sqrt(area / aspect)))
            if bw < w and bh < h:
                top = int(torch.randint(0, h - bh + 1, (), generator=generator))
                left = int(torch.randint(0, w - bw + 1, (), generator=generator))
                block = mask[top:top + bh, left:left + bw]
                new = bh * bw - int(block.sum())
                if 0 < new <= remaining:
                    block.fill_(True)
                    delta = new
            if delta > 0:
                break
        if delta == 0:
            break
        count += delta
    return mask
