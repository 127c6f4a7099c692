"""Masking strategies: counts, top-k / bottom-k membership, hints, gating, determinism, non-224 grids."""

from __future__ import annotations

import math

import pytest
import torch

from attmask.pretrain.masking import (
    attention_topk_mask,
    attmask,
    block_mask,
    canonical_shape,
    draw_pred_ratio,
    num_masked,
    random_mask,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def distinct_attention(b: int, n: int, seed: int = 0) -> torch.Tensor:
    """Rows of distinct values so top-k sets are unambiguous."""
    g = gen(seed)
    return torch.stack([torch.randperm(n, generator=g).float() / n for _ in range(b)])


def test_names_and_alias() -> None:
    assert canonical_shape("random") == "rand"
    for name in ("attmask_high", "attmask_low", "attmask_hint", "rand", "block", "none"):
        assert canonical_shape(name) == name
    with pytest.raises(ValueError, match="attmask_high"):
        canonical_shape("attmask_medium")


@pytest.mark.parametrize("n,ratio,expected", [(196, 0.3, 58), (196, 0.1, 19), (64, 0.5, 32), (64, 0.29, 18), (49, 0.1, 4)])
def test_num_masked_is_floor(n: int, ratio: float, expected: int) -> None:
    assert num_masked(n, ratio) == expected == math.floor(n * ratio)


@pytest.mark.parametrize("n", [196, 64, 36, 49])  # 224/16, 32/4, 96/16, 7x7
@pytest.mark.parametrize("shape", ["attmask_high", "attmask_low"])
def test_high_low_membership_and_count(n: int, shape: str) -> None:
    att = distinct_attention(6, n)
    ratio = 0.37
    m = attmask(att, shape, ratio, masking_prob=1.0, generator=gen())
    count = num_masked(n, ratio)
    assert m.dtype == torch.bool and m.shape == (6, n)
    assert torch.all(m.sum(1) == count)
    for row, mask in zip(att, m):
        order = torch.argsort(row, descending=shape == "attmask_high")
        assert set(order[:count].tolist()) == set(mask.nonzero().flatten().tolist())
        # every masked token is at least (High) / at most (Low) as attended as every visible one
        if shape == "attmask_high":
            assert row[mask].min() > row[~mask].max()
        else:
            assert row[mask].max() < row[~mask].min()


def test_hint_reveals_top_tokens_only() -> None:
    n, b = 196, 64
    att = distinct_attention(b, n, seed=1)
    ratio, r2, show_max = 0.4, 0.35, 0.1
    show_ratio = show_max * r2
    hint = attmask(att, "attmask_hint", ratio, masking_prob=1.0, show_ratio=show_ratio, show_max=show_max,
                   generator=gen(3))
    high = attention_topk_mask(att, num_masked(n, ratio))
    top = attention_topk_mask(att, num_masked(n, show_max))  # the 19 most attended
    revealed = high & ~hint
    assert not torch.any(hint & ~high)  # hints only ever unmask
    assert torch.all(revealed.sum(1) == num_masked(n, show_ratio))  # floor(196 * 0.035) = 6
    assert not torch.any(revealed & ~top)  # hints ⊂ top set
    assert torch.all(hint.sum(1) == num_masked(n, ratio) - num_masked(n, show_ratio))
    # uniform among the top set: over many rows every top rank gets revealed sometimes
    ranks = torch.argsort(torch.argsort(att, dim=1, descending=True), dim=1)
    assert set(ranks[revealed].tolist()) == set(range(num_masked(n, show_max)))


def test_gating_rate_is_masking_prob() -> None:
    att = distinct_attention(4000, 16)
    m = attmask(att, "attmask_high", 0.5, masking_prob=0.5, generator=gen(7))
    masked_rows = m.any(1)
    rate = masked_rows.float().mean().item()
    assert abs(rate - 0.5) < 4 * math.sqrt(0.25 / 4000)  # 4 sigma
    assert torch.all(m[masked_rows].sum(1) == 8) and not torch.any(m[~masked_rows])


@pytest.mark.parametrize("shape", ["attmask_high", "attmask_low", "attmask_hint"])
def test_attmask_deterministic_under_seed(shape: str) -> None:
    att = distinct_attention(32, 64)
    a = attmask(att, shape, 0.3, show_ratio=0.04, generator=gen(11))
    b = attmask(att, shape, 0.3, show_ratio=0.04, generator=gen(11))
    c = attmask(att, shape, 0.3, show_ratio=0.04, generator=gen(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # gating (and hints) depend on the generator


def test_ties_broken_deterministically() -> None:
    att = torch.zeros(2, 10)
    m = attention_topk_mask(att, 3)
    assert torch.equal(m[0], torch.tensor([True] * 3 + [False] * 7))


@pytest.mark.parametrize("grid", [(14, 14), (8, 8), (6, 6), (7, 5)])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.3, 0.5])
def test_random_mask_count_and_determinism(grid: tuple[int, int], ratio: float) -> None:
    m = random_mask(grid, ratio, gen(5))
    assert m.shape == grid and m.dtype == torch.bool
    assert int(m.sum()) == num_masked(grid[0] * grid[1], ratio)
    assert torch.equal(m, random_mask(grid, ratio, gen(5)))


def test_random_mask_is_uniform_over_positions() -> None:
    g = gen(0)
    counts = sum(random_mask((8, 8), 0.25, g).float() for _ in range(2000))
    freq = counts.flatten() / 2000
    assert torch.all((freq - 0.25).abs() < 0.05)


@pytest.mark.parametrize("grid", [(14, 14), (8, 8), (12, 9)])
def test_block_mask_covers_target_in_blocks(grid: tuple[int, int]) -> None:
    g = gen(2)
    n = grid[0] * grid[1]
    for ratio in (0.1, 0.3, 0.5):
        for _ in range(20):
            m = block_mask(grid, ratio, g)
            assert m.shape == grid
            covered = int(m.sum())
            # BEiT: stops once the target is reached; a block never overshoots the remaining budget
            assert covered <= math.ceil(ratio * n) + 0 or covered == 0
            assert covered >= 0.5 * ratio * n  # rarely gives up early on these grids
    assert torch.equal(block_mask((14, 14), 0.4, gen(9)), block_mask((14, 14), 0.4, gen(9)))


def _neighbour_share(m: torch.Tensor) -> float:
    """Share of masked positions whose right or lower neighbour is masked too."""
    right = m[:, :-1] & m[:, 1:]
    down = m[:-1, :] & m[1:, :]
    has = torch.zeros_like(m)
    has[:, :-1] |= right
    has[:-1, :] |= down
    return float(has[m].float().mean())


def test_block_masks_are_blocks_not_scattered_tokens() -> None:
    g = gen(4)
    block = sum(_neighbour_share(block_mask((14, 14), 0.3, g)) for _ in range(50)) / 50
    scattered = sum(_neighbour_share(random_mask((14, 14), 0.3, g)) for _ in range(50)) / 50
    assert block > 0.85 and scattered < 0.6


def test_draw_pred_ratio_ranges() -> None:
    g = gen(0)
    scalar = [draw_pred_ratio(0.3, 0.2, g) for _ in range(2000)]
    assert min(scalar) >= 0.1 and max(scalar) <= 0.5
    assert abs(sum(scalar) / len(scalar) - 0.3) < 0.01
    assert draw_pred_ratio(0.75, 0.0, g) == 0.75
    listed = [draw_pred_ratio([0.0, 0.3], [0.0, 0.2], g) for _ in range(4000)]
    zeros = sum(r == 0.0 for r in listed) / len(listed)
    assert abs(zeros - 0.5) < 0.04  # unmasked with probability 0.5
    assert all(0.1 <= r <= 0.5 for r in listed if r != 0.0)
    assert draw_pred_ratio(0.3, 0.2, gen(1)) == draw_pred_ratio(0.3, 0.2, gen(1))
