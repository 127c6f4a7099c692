"""Revisited Oxford / Paris scoring: revisitop's ``compute_map`` as a pure function over arrays.

Source of the definitions: ``filipradenovic/revisitop``, ``python/evaluate.py`` (``compute_ap``,
``compute_map``) and the protocol split of its example scripts (Radenović et al., "Revisiting
Oxford and Paris", CVPR 2018). Facts reproduced here, in our own code:

- ``ranks`` has shape [n_db, n_queries]: column q lists database indices in ranked order (best
  first), 0-based.
- Per query the positives (``ok``) and ``junk`` indices come from the ground truth. Positions of
  positives in the ranking are taken in increasing order; each is decreased by the number of junk
  images ranked before it (junk is removed from the ranking).
- AP is the trapezoidal area under the precision/recall curve: the j-th positive found (0-based)
  at adjusted 0-based position r adds ``(p0 + p1) / 2 / n_ok`` with ``p0 = j / r`` (1 when r = 0)
  and ``p1 = (j + 1) / (r + 1)``; ``n_ok`` counts every positive of the ground truth, so a
  positive missing from a truncated ranking adds nothing.
- mP@k: with the adjusted 1-based positions ``P`` of the positives, ``kq = min(max(P), k)`` and
  ``P@k = |{P <= kq}| / kq``. So a query whose last positive is ranked before k is not penalised
  for having fewer than k positives (e.g. two positives at positions 1 and 2 give P@10 = 1).
- Queries without positives are skipped: they count neither in the numerator nor the denominator
  of the means.
- The three settings: Easy (ok = easy, junk = junk + hard), Medium (ok = easy + hard,
  junk = junk), Hard (ok = hard, junk = junk + easy).

One departure, for inputs the reference cannot handle: when a query has positives but none of
them appears in a (truncated) ranking, revisitop's ``max`` over an empty array raises; here its AP
and every P@k are 0.

Values here are fractions (0-1), as revisitop returns them; :func:`revisitop_metrics` converts to
the record's percent at the boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

SETTINGS = ("easy", "medium", "hard")
KAPPAS = (1, 5, 10)


@dataclass(frozen=True)
class QueryTruth:
    """Ground truth of one query under one setting: database indices of positives and junk."""

    ok: np.ndarray  # [n_ok] int64
    junk: np.ndarray  # [n_junk] int64


@dataclass(frozen=True)
class MapResult:
    """``mean_ap`` and ``mean_precision`` [len(kappas)] are means over queries with positives;
    ``aps`` [n_queries] and ``precisions`` [n_queries, len(kappas)] are NaN for skipped queries."""

    mean_ap: float
    mean_precision: np.ndarray
    aps: np.ndarray
    precisions: np.ndarray
    evaluated: int


def _as_index_array(values: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


def setting_truth(query_gnd: Mapping[str, Sequence[int]], setting: str) -> QueryTruth:
    """The (ok, junk) lists of one revisitop ground-truth entry under ``setting``."""
    easy = _as_index_array(query_gnd["easy"])
    hard = _as_index_array(query_gnd["hard"])
    junk = _as_index_array(query_gnd["junk"])
    if setting == "easy":
        return QueryTruth(ok=easy, junk=np.concatenate([junk, hard]))
    if setting == "medium":
        return QueryTruth(ok=np.concatenate([easy, hard]), junk=junk)
    if setting == "hard":
        return QueryTruth(ok=hard, junk=np.concatenate([junk, easy]))
    raise ValueError(f"unknown setting {setting!r} (choose from {', '.join(SETTINGS)})")


def adjusted_positive_positions(ranking: np.ndarray, truth: QueryTruth) -> np.ndarray:
    """0-based positions [n_found] of the positives in ``ranking`` [n_db] once junk is removed."""
    positions = np.arange(ranking.shape[0])
    pos = positions[np.isin(ranking, truth.ok)]
    junk = positions[np.isin(ranking, truth.junk)]
    # junk ranked strictly before each positive shifts it up by one (both arrays ascending)
    return pos - np.searchsorted(junk, pos, side="left")


def average_precision(positions: np.ndarray, n_ok: int) -> float:
    """Trapezoidal AP from adjusted 0-based positions [n_found] (ascending) of ``n_ok`` positives."""
    if n_ok <= 0:
        raise ValueError("average precision needs at least one positive")
    r = positions.astype(np.float64)
    j = np.arange(r.shape[0], dtype=np.float64)
    p0 = np.where(r == 0, 1.0, j / np.maximum(r, 1.0))
    p1 = (j + 1.0) / (r + 1.0)
    return float(np.sum((p0 + p1) / 2.0) / n_ok)


def precision_at(positions: np.ndarray, kappas: Sequence[int]) -> np.ndarray:
    """revisitop's P@k [len(kappas)] from adjusted 0-based positions (see the module docstring)."""
    if positions.size == 0:
        return np.zeros(len(kappas))
    one_based = positions + 1
    last = int(one_based.max())
    out = np.empty(len(kappas))
    for i, k in enumerate(kappas):
        kq = min(last, int(k))
        out[i] = np.count_nonzero(one_based <= kq) / kq
    return out


def compute_map(ranks: np.ndarray, truths: Sequence[QueryTruth],
                kappas: Sequence[int] = KAPPAS) -> MapResult:
    """mAP and mP@k of ``ranks`` [n_db, n_queries] against one setting's ``truths`` [n_queries]."""
    if ranks.ndim != 2 or ranks.shape[1] != len(truths):
        raise ValueError(f"ranks must have shape [n_db, {len(truths)}], got {list(ranks.shape)}")
    nq = len(truths)
    aps = np.full(nq, np.nan)
    prs = np.full((nq, len(kappas)), np.nan)
    for q, truth in enumerate(truths):
        if truth.ok.size == 0:
            continue
        positions = adjusted_positive_positions(ranks[:, q], truth)
        aps[q] = average_precision(positions, int(truth.ok.size))
        prs[q] = precision_at(positions, kappas)
    evaluated = int(np.count_nonzero(~np.isnan(aps)))
    if evaluated == 0:
        return MapResult(mean_ap=float("nan"), mean_precision=np.full(len(kappas), np.nan), aps=aps,
                         precisions=prs, evaluated=0)
    return MapResult(mean_ap=float(np.nanmean(aps)), mean_precision=np.nanmean(prs, axis=0), aps=aps,
                     precisions=prs, evaluated=evaluated)


def revisitop_metrics(ranks: np.ndarray, gnd: Sequence[Mapping[str, Sequence[int]]],
                      kappas: Sequence[int] = KAPPAS) -> dict[str, float]:
    """The record's metrics in percent: ``mAP_<s>`` and ``mP@<k>_<s>`` for s in easy/medium/hard.

    A setting in which no query has positives is left out (its mean is undefined).
    """
    results = {s: compute_map(ranks, [setting_truth(g, s) for g in gnd], kappas) for s in SETTINGS}
    results = {s: r for s, r in results.items() if r.evaluated > 0}
    metrics = {f"mAP_{s}": 100.0 * r.mean_ap for s, r in results.items()}
    for s, r in results.items():
        for k, value in zip(kappas, r.mean_precision):
            metrics[f"mP@{k}_{s}"] = 100.0 * float(value)
    return metrics
