"""Label propagation for semi-supervised video object segmentation (DAVIS-2017), vectorised.

Reference: DINO ``eval_video_segmentation.py`` (``label_propagation``, ``restrict_neighborhood``,
``norm_mask``; itself after UVC, Li et al. 2019), used unchanged by iBOT and AttMask. For target
frame t:

- sources = the first frame (its ground-truth labels, one-hot at patch resolution) and the
  ``n_last_frames`` = 7 previous frames (their propagated soft labels, at patch resolution);
- features = last-block patch tokens, L2-normalised; affinity ``exp(cos / temperature)`` with
  temperature 0.1, zero outside a square window of half-size ``radius`` = 12 patches around the
  target position (every source frame);
- per target, the ``topk`` = 5 largest affinities over all sources of all context frames are kept
  (values tied with the 5th are kept too), normalised to sum 1, and the soft labels are their
  weighted sum;
- the soft labels [C, h, w] are upsampled bilinearly by the patch size, each channel min-max
  normalised (``norm_mask``), arg-maxed, and resized to the original frame with nearest neighbour.

What differs from the reference is only how the same numbers are computed:

- the context lives in one preallocated buffer (features normalised once, when a frame enters)
  instead of being re-stacked and re-normalised for every target frame;
- the window is never built with Python loops: targets are processed in tiles, and each tile
  only scores the sources that can fall inside its targets' windows (a rectangle grown by
  ``radius``), with the exact window as a broadcast comparison of patch coordinates;
- ``exp`` is taken after the top-k threshold, shifted by the row maximum (identical after the
  normalisation; it cannot overflow at small temperatures). Equal results up to float rounding:
  the reference's ``exp`` can map two distinct similarities to one float, and then keeps both.
- a channel that is constant over the frame (the reference divides 0 by 0 there) is set to 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PropagationParams:
    """Reference values (DINO's defaults) of every propagation parameter."""

    n_last_frames: int = 7  # previous frames in the context, besides the first frame
    radius: int = 12  # half-size of the square window in patches (``size_mask_neighborhood``); 0 = none
    topk: int = 5
    temperature: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Tile:
    ty: slice  # target rows (patch grid)
    sy: slice  # source rows: the targets' windows, clipped to the grid
    outside: torch.Tensor | None  # [T, Rh, 1, Rw] bool: source outside the target's window; None: none is


@dataclass(frozen=True)
class _Band:
    tx: slice  # target columns
    sx: slice  # source columns reachable from them (grown by the radius, clipped)
    tiles: tuple[_Tile, ...]


def plan_bands(h: int, w: int, radius: int, tile: int | tuple[int, int],
               device: torch.device | str = "cpu") -> list[_Band]:
    """Column bands of ``tile_w`` target columns, each cut into tiles of ``tile_h`` target rows
    (``tile`` = (tile_h, tile_w), or one int for both).

    A tile's sources are the rectangle its targets' windows can reach; ``outside`` marks, per
    target, the sources of that rectangle outside its own square window (|dy| > radius or
    |dx| > radius), as a broadcast comparison of patch coordinates. ``radius`` <= 0 means no
    window: one tile, every source.
    """
    if radius <= 0:
        return [_Band(tx=slice(0, w), sx=slice(0, w), tiles=(_Tile(ty=slice(0, h), sy=slice(0, h), outside=None),))]
    step_y, step_x = (tile, tile) if isinstance(tile, int) else tile
    step_y, step_x = max(1, step_y), max(1, step_x)
    bands = []
    for x0 in range(0, w, step_x):
        x1 = min(w, x0 + step_x)
        sx = slice(max(0, x0 - radius), min(w, x1 + radius))
        tx_c = torch.arange(x0, x1, device=device)
        sx_c = torch.arange(sx.start, sx.stop, device=device)
        dx_out = (tx_c[:, None] - sx_c[None, :]).abs() > radius  # [tw, Rw]
        tiles = []
        for y0 in range(0, h, step_y):
            y1 = min(h, y0 + step_y)
            sy = slice(max(0, y0 - radius), min(h, y1 + radius))
            ty_c = torch.arange(y0, y1, device=device)
            sy_c = torch.arange(sy.start, sy.stop, device=device)
            dy_out = (ty_c[:, None] - sy_c[None, :]).abs() > radius  # [th, Rh]
            outside = (dy_out[:, None, :, None] | dx_out[None, :, None, :]).reshape(
                (y1 - y0) * (x1 - x0), sy.stop - sy.start, 1, sx.stop - sx.start)
            tiles.append(_Tile(ty=slice(y0, y1), sy=sy, outside=outside if bool(outside.any()) else None))
        bands.append(_Band(tx=slice(x0, x1), sx=sx, tiles=tuple(tiles)))
    return bands


def topk_propagate(sim: torch.Tensor, labels: torch.Tensor, topk: int, temperature: float) -> torch.Tensor:
    """Soft labels [T, C] from similarities ``sim`` [T, S] (-inf = excluded) and ``labels`` [S, C].

    Per target, the ``topk`` largest similarities are kept, plus any source tied with the k-th
    (as the reference's ``aff[aff < kth] = 0``); weights ``exp(sim / temperature)`` normalised to 1.
    """
    k = min(topk, sim.shape[1])
    if sim.shape[1] > k:
        vals, idx = torch.topk(sim, k + 1, dim=1)  # descending
        kth, next_ = vals[:, k - 1], vals[:, k]
        tied = bool(((next_ == kth) & torch.isfinite(kth)).any())
    else:
        vals, idx = torch.topk(sim, k, dim=1)
        tied = False
    best = vals[:, :1]
    if not tied:  # the common case: exactly k sources kept per target
        weights = torch.softmax((vals[:, :k] - best) / temperature, dim=1)  # [T, k]
        return torch.einsum("tk,tkc->tc", weights, labels[idx[:, :k]])
    keep = sim >= vals[:, k - 1: k]
    weights = torch.where(keep, torch.exp((sim - best) / temperature), torch.zeros((), dtype=sim.dtype,
                                                                                    device=sim.device))
    return (weights / weights.sum(dim=1, keepdim=True)) @ labels


class VideoPropagator:
    """Propagates first-frame labels through one video, one target frame per :meth:`step`.

    ``first_features`` [h, w, D] and ``first_labels`` [h, w, C] (one-hot) seed the context.
    ``step(features [h, w, D])`` returns the target's soft labels [h, w, C] and appends the frame
    to the context (the oldest previous frame leaves once ``n_last_frames`` are held).

    The context is stored per column band as [h, slots, band width, D] (slot 0 = first frame),
    written once when a frame enters; a tile's sources are then one contiguous row range of its
    band, scored with a single matrix product. Empty slots (early frames) are excluded.
    """

    def __init__(self, first_features: torch.Tensor, first_labels: torch.Tensor, params: PropagationParams,
                 tile: int | tuple[int, int] = 8) -> None:
        h, w, d = first_features.shape
        if tuple(first_labels.shape[:2]) != (h, w):
            raise ValueError(f"labels grid {tuple(first_labels.shape[:2])} differs from the features' {(h, w)}")
        if params.topk < 1 or params.temperature <= 0 or params.n_last_frames < 0:
            raise ValueError(f"invalid propagation parameters {params}")
        c = first_labels.shape[-1]
        dev, dtype = first_features.device, first_features.dtype
        self.params = params
        self.grid = (h, w)
        self.slots = 1 + params.n_last_frames
        self.bands = plan_bands(h, w, params.radius, tile, dev)
        self.band_features = [torch.zeros(h, self.slots, b.sx.stop - b.sx.start, d, device=dev, dtype=dtype)
                              for b in self.bands]
        self.band_labels = [torch.zeros(h, self.slots, b.sx.stop - b.sx.start, c, device=dev, dtype=dtype)
                            for b in self.bands]
        self._store(0, F.normalize(first_features, dim=-1), first_labels.to(dtype))
        self.held = 0  # previous frames, in slots 1..held
        self.next_slot = 1

    def _store(self, slot: int, features: torch.Tensor, labels: torch.Tensor) -> None:
        for b, bf, bl in zip(self.bands, self.band_features, self.band_labels):
            bf[:, slot] = features[:, b.sx]
            bl[:, slot] = labels[:, b.sx]

    def step(self, features: torch.Tensor) -> torch.Tensor:
        if tuple(features.shape[:2]) != self.grid:
            raise ValueError(f"frame grid {tuple(features.shape[:2])} differs from the first frame's {self.grid}")
        target = F.normalize(features, dim=-1)
        used = 1 + self.held
        d = target.shape[-1]
        c = self.band_labels[0].shape[-1]
        out = torch.empty(*self.grid, c, device=target.device, dtype=target.dtype)
        for b, bf, bl in zip(self.bands, self.band_features, self.band_labels):
            bw = b.sx.stop - b.sx.start
            for t in b.tiles:
                tgt = target[t.ty, b.tx].reshape(-1, d)  # [T, D]
                rh = t.sy.stop - t.sy.start
                sim = tgt @ bf[t.sy].reshape(-1, d).T  # [T, Rh * slots * bw]
                sim4 = sim.view(-1, rh, self.slots, bw)
                if t.outside is not None:
                    sim4.masked_fill_(t.outside, float("-inf"))
                if used < self.slots:
                    sim4[:, :, used:] = float("-inf")
                soft = topk_propagate(sim, bl[t.sy].reshape(-1, c), self.params.topk, self.params.temperature)
                out[t.ty, b.tx] = soft.reshape(t.ty.stop - t.ty.start, b.tx.stop - b.tx.start, c)
        if self.params.n_last_frames > 0:
            self._store(self.next_slot, target, out)
            self.held = min(self.held + 1, self.params.n_last_frames)
            self.next_slot = 1 + (self.next_slot % self.params.n_last_frames)
        return out


def propagate_video(features: Iterable[torch.Tensor], first_labels: torch.Tensor, params: PropagationParams,
                    tile: int = 8) -> Iterator[torch.Tensor]:
    """Soft labels [h, w, C] of frames 1.. of a video from features [h, w, D] of frames 0.. ."""
    it = iter(features)
    prop = VideoPropagator(next(it), first_labels, params, tile)
    for f in it:
        yield prop.step(f)


def norm_mask(soft: torch.Tensor) -> torch.Tensor:
    """Per-channel min-max normalisation of [C, H, W] for channels whose maximum is positive."""
    flat = soft.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    span = hi - lo
    scaled = (soft - lo[:, None, None]) / torch.where(span > 0, span, torch.ones_like(span))[:, None, None]
    scaled = torch.where((span > 0)[:, None, None], scaled, torch.zeros_like(soft))
    return torch.where((hi > 0)[:, None, None], scaled, soft)


def soft_to_labels(soft: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Soft labels [h, w, C] -> label map [h * patch, w * patch] (int64): upsample, norm_mask, argmax."""
    x = soft.permute(2, 0, 1)[None]
    up = F.interpolate(x, scale_factor=patch_size, mode="bilinear", align_corners=False,
                       recompute_scale_factor=False)[0]
    return norm_mask(up).argmax(dim=0)


def one_hot_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label map [h, w] (int) -> one-hot [h, w, num_classes] float32."""
    return F.one_hot(labels.long(), num_classes).float()
