"""Label propagation: constructed videos with known answers, and equality with a dense oracle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attmask.transfer.davis_propagation import (
    PropagationParams,
    VideoPropagator,
    norm_mask,
    one_hot_labels,
    plan_bands,
    propagate_video,
    soft_to_labels,
)

pytestmark = pytest.mark.usefixtures("single_thread")

H, W = 6, 8


def code_frame(shift: int, h: int = H, w: int = W) -> torch.Tensor:
    """Features [h, w, D] of a scene of unique patches moved ``shift`` columns to the right.

    Patch (y, x) shows scene content (y, x - shift): the one-hot code e_{y*w + x - shift}; columns
    that enter the view get fresh codes orthogonal to everything else.
    """
    d = h * w + h * w
    f = torch.zeros(h, w, d)
    for y in range(h):
        for x in range(w):
            src = x - shift
            idx = y * w + src if src >= 0 else h * w + y * w + x
            f[y, x, idx] = 1.0
    return f


def first_labels(h: int = H, w: int = W) -> torch.Tensor:
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[:, : w // 2] = 1
    labels[1:3, 5:7] = 2
    return labels


def test_labels_follow_the_content_they_were_given_to() -> None:
    # Each patch matches exactly one source per context frame (cosine 1, all others 0), so the
    # labels move with the content: frame t's label at (y, x) is frame 0's at (y, x - t). The
    # many sources tied at cosine 0 are kept (the reference's threshold keeps ties) but weigh
    # exp(0) against exp(10): the match carries > 99.8% of the weight.
    labels0 = first_labels()
    frames = [code_frame(s) for s in range(4)]
    params = PropagationParams(n_last_frames=7, radius=2, topk=5, temperature=0.1)
    outs = list(propagate_video(frames, one_hot_labels(labels0, 3), params, tile=3))
    for t, soft in enumerate(outs, start=1):
        assert soft.shape == (H, W, 3)
        assert torch.allclose(soft.sum(-1), torch.ones(H, W), atol=1e-5)
        expected = one_hot_labels(labels0[:, : W - t], 3)
        assert (soft[:, t:] - expected).abs().max() < 2e-3
        assert (soft[:, t:].argmax(-1) == labels0[:, : W - t]).all()


def test_sources_outside_the_window_are_never_used() -> None:
    # With radius 1, content moved by 3 columns has its match outside every window: all sources
    # inside the 3x3 window score cosine 0, tie, and are averaged uniformly. Known answer: the
    # mean of frame 0's one-hot labels over each target's (clipped) 3x3 neighbourhood.
    labels0 = first_labels()
    onehot = one_hot_labels(labels0, 3)
    params = PropagationParams(n_last_frames=7, radius=1, topk=5, temperature=0.1)
    soft = next(propagate_video([code_frame(0), code_frame(3)], onehot, params, tile=4))
    expected = F.avg_pool2d(onehot.permute(2, 0, 1)[None], 3, stride=1, padding=1, count_include_pad=False)
    assert torch.allclose(soft, expected[0].permute(1, 2, 0), atol=1e-6)


def dense_oracle(frames: list[torch.Tensor], labels: torch.Tensor, p: PropagationParams) -> list[torch.Tensor]:
    """The reference's arithmetic, written densely: exp(cos / T) times the window mask over all
    sources of first + previous frames, top-k with ties by threshold, normalised."""
    h, w, d = frames[0].shape
    n = h * w
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    yy, xx = yy.reshape(-1), xx.reshape(-1)
    inside = ((yy[:, None] - yy[None]).abs() <= p.radius) & ((xx[:, None] - xx[None]).abs() <= p.radius)
    if p.radius <= 0:
        inside = torch.ones(n, n, dtype=torch.bool)
    first = (F.normalize(frames[0].reshape(n, d), dim=1), labels.reshape(n, -1))
    previous: list[tuple[torch.Tensor, torch.Tensor]] = []
    outs = []
    for f in frames[1:]:
        tgt = F.normalize(f.reshape(n, d), dim=1)
        context = [first, *(previous[-p.n_last_frames:] if p.n_last_frames else [])]
        aff = torch.cat([torch.exp(tgt @ s.T / p.temperature) * inside for s, _ in context], dim=1)  # [N, K*N]
        kth = torch.topk(aff, p.topk, dim=1).values[:, -1:]
        aff = torch.where(aff < kth, torch.zeros_like(aff), aff)
        aff = aff / aff.sum(1, keepdim=True)
        out = aff @ torch.cat([lab for _, lab in context])
        previous.append((tgt, out))
        outs.append(out.reshape(h, w, -1))
    return outs


@pytest.mark.parametrize("radius, tile, n_last, topk", [(2, 3, 7, 5), (3, 4, 2, 3), (0, 8, 7, 5), (1, (2, 5), 4, 1)])
def test_equals_the_dense_oracle_on_random_features(radius: int, tile, n_last: int, topk: int) -> None:
    g = torch.Generator().manual_seed(radius)
    h, w, d = 7, 9, 16
    base = torch.randn(h, w, d, generator=g)
    frames = [base + 0.7 * torch.randn(h, w, d, generator=g) for _ in range(12)]  # > 1 + n_last frames
    labels = one_hot_labels(torch.randint(0, 3, (h, w), generator=g), 3)
    p = PropagationParams(n_last_frames=n_last, radius=radius, topk=topk, temperature=0.1)
    ours = list(propagate_video(frames, labels, p, tile=tile))
    oracle = dense_oracle(frames, labels, p)
    for a, b in zip(ours, oracle):
        assert torch.allclose(a, b, atol=1e-5)


def test_tiles_cover_every_target_once() -> None:
    seen = torch.zeros(11, 13, dtype=torch.long)
    for band in plan_bands(11, 13, radius=2, tile=(3, 4)):
        for t in band.tiles:
            seen[t.ty, band.tx] += 1
            assert t.sy.start <= t.ty.start and t.sy.stop >= t.ty.stop
    assert (seen == 1).all()


def test_context_rejects_a_different_grid() -> None:
    prop = VideoPropagator(torch.randn(4, 5, 8), one_hot_labels(torch.zeros(4, 5, dtype=torch.long), 2),
                           PropagationParams())
    with pytest.raises(ValueError, match="grid"):
        prop.step(torch.randn(5, 4, 8))


def test_norm_mask_and_upsampled_argmax() -> None:
    soft = torch.tensor([[[0.2, 0.8], [0.6, 0.4]]])  # [h=1, w=2, C=2]
    # channel 0 over the two patches: 0.2, 0.6 -> 0, 1; channel 1: 0.8, 0.4 -> 1, 0 (min-max each)
    x = soft.permute(2, 0, 1)
    assert torch.allclose(norm_mask(x), torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]]))
    assert torch.equal(norm_mask(torch.zeros(2, 1, 2)), torch.zeros(2, 1, 2))  # max 0: unchanged
    labels = soft_to_labels(soft, patch_size=4)
    assert labels.shape == (4, 8)
    assert (labels[:, 0] == 1).all() and (labels[:, -1] == 0).all()
