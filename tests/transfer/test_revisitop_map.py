"""revisitop compute_map semantics on hand-checkable rankings (values worked out in the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from attmask.transfer.revisitop_map import (
    QueryTruth,
    adjusted_positive_positions,
    average_precision,
    compute_map,
    precision_at,
    revisitop_metrics,
    setting_truth,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def ranks_of(*columns: list[int]) -> np.ndarray:
    """[n_db, n_queries] from per-query rankings (database indices, best first)."""
    return np.stack([np.asarray(c) for c in columns], axis=1)


def test_perfect_ranking_scores_100_in_every_setting() -> None:
    # easy {0, 1}, hard {2, 3, 4}, junk {5}: easy first, then hard, then junk, then negatives is
    # perfect for Easy (hard = junk), Medium and Hard (easy = junk).
    gnd = [{"easy": [0, 1], "hard": [2, 3, 4], "junk": [5]}]
    ranks = ranks_of([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    m = revisitop_metrics(ranks, gnd)
    assert set(m) == {f"mAP_{s}" for s in ("easy", "medium", "hard")} | {
        f"mP@{k}_{s}" for k in (1, 5, 10) for s in ("easy", "medium", "hard")}
    assert all(v == pytest.approx(100.0) for v in m.values()), m


def test_known_positions_with_junk() -> None:
    # ok = {3, 7}, junk = {5}; ranking 0 3 5 1 7 ...: 3 at position 1, junk at 2, 7 at 4 -> 3 after
    # removing the junk. AP = [(0/1 + 1/2)/2 + (1/3 + 2/4)/2] / 2 = (1/4 + 5/12) / 2 = 1/3.
    # P@k on 1-based positions {2, 4}: kq = min(4, k); P@1 = 0/1, P@5 = 2/4, P@10 = 2/4.
    truth = QueryTruth(ok=np.array([3, 7]), junk=np.array([5]))
    ranking = np.array([0, 3, 5, 1, 7, 2, 4, 6, 8, 9])
    pos = adjusted_positive_positions(ranking, truth)
    assert pos.tolist() == [1, 3]
    assert average_precision(pos, 2) == pytest.approx(1 / 3)
    assert precision_at(pos, (1, 5, 10)).tolist() == pytest.approx([0.0, 0.5, 0.5])


def test_first_position_and_missing_positive() -> None:
    # a positive at position 0 has p0 = 1: AP = (1 + 1)/2 / n_ok; with a second positive never
    # retrieved, n_ok = 2 halves it.
    assert average_precision(np.array([0]), 1) == pytest.approx(1.0)
    assert average_precision(np.array([0]), 2) == pytest.approx(0.5)
    # none retrieved: AP 0, P@k 0 (the reference would fail on max([]))
    assert average_precision(np.array([], dtype=np.int64), 3) == 0.0
    assert precision_at(np.array([], dtype=np.int64), (1, 5)).tolist() == [0.0, 0.0]


def test_precision_at_k_convention() -> None:
    # two positives at 1-based positions 1, 2: kq = min(2, k), so P@5 = P@10 = 2/2 = 1
    assert precision_at(np.array([0, 1]), (1, 5, 10)).tolist() == [1.0, 1.0, 1.0]
    # positives at 1-based 1, 3, 12: P@1 = 1/1, P@5 = 2/5, P@10 = 2/10
    assert precision_at(np.array([0, 2, 11]), (1, 5, 10)).tolist() == pytest.approx([1.0, 0.4, 0.2])


def test_settings_and_junk_removal_per_setting() -> None:
    g = {"easy": [1], "hard": [2], "junk": [3]}
    assert sorted(setting_truth(g, "easy").junk.tolist()) == [2, 3]
    assert sorted(setting_truth(g, "medium").ok.tolist()) == [1, 2]
    assert sorted(setting_truth(g, "hard").junk.tolist()) == [1, 3]
    # ranking 2 1 0 3: Easy -> hard image 2 is junk, easy 1 moves to position 0: AP 1.
    # Hard -> easy image 1 is junk; hard 2 at position 0: AP 1. Medium -> both at 0, 1: AP 1.
    m = revisitop_metrics(ranks_of([2, 1, 0, 3]), [g])
    assert m["mAP_easy"] == m["mAP_hard"] == m["mAP_medium"] == pytest.approx(100.0)
    # ranking 0 2 1 3: Easy: image 2 (junk) removed, easy at 1 -> 1: AP = (0 + 1/2)/2 = 0.25
    m = revisitop_metrics(ranks_of([0, 2, 1, 3]), [g])
    assert m["mAP_easy"] == pytest.approx(25.0)
    assert m["mP@1_easy"] == pytest.approx(0.0) and m["mP@5_easy"] == pytest.approx(50.0)


def test_queries_without_positives_are_skipped() -> None:
    # query 0 has no hard images: Hard averages over query 1 only; Easy over query 0 only.
    gnd = [{"easy": [0], "hard": [], "junk": []}, {"easy": [], "hard": [1], "junk": []}]
    ranks = ranks_of([0, 1, 2], [0, 2, 1])
    # q0: its easy image first -> AP 1. q1: its hard image at 0-based 2: p0 = 0/2, p1 = 1/3 -> AP 1/6
    res = compute_map(ranks, [setting_truth(g, "hard") for g in gnd])
    assert res.evaluated == 1 and np.isnan(res.aps[0])
    assert res.mean_ap == pytest.approx(1 / 6)
    m = revisitop_metrics(ranks, gnd)
    assert m["mAP_easy"] == pytest.approx(100.0)
    assert m["mAP_hard"] == pytest.approx(100 / 6)
    # Medium: q0 AP 1, q1 AP 1/6 -> mean 7/12
    assert m["mAP_medium"] == pytest.approx(100 * 7 / 12)


def test_setting_without_any_positive_is_left_out() -> None:
    m = revisitop_metrics(ranks_of([0, 1]), [{"easy": [], "hard": [0], "junk": []}])
    assert "mAP_easy" not in m and "mP@1_easy" not in m
    assert m["mAP_hard"] == pytest.approx(100.0)


def test_rejects_ranks_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        compute_map(np.zeros((5, 2), dtype=np.int64), [QueryTruth(np.array([0]), np.array([]))])
