"""Multinomial logistic regression on L2-normalised features (scikit-learn), λ chosen on held-out data.

The DINO / iBOT alternative to k-NN for few labels: features L2-normalised, an l2 penalty whose
weight is scaled by 1/N (iBOT fits cyanure with ``lambd = λ / N``, i.e. minimises
``(1/N) Σ loss + (λ / 2N) ||W||²``). Multiplying by N/λ gives scikit-learn's objective
``C Σ loss + ½ ||W||²`` with ``C = 1 / λ``, independent of N. No intercept (as iBOT).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

log = logging.getLogger(__name__)

DEFAULT_LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
MAX_ITER = 1000


def l2_normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` [N, D] scaled to unit L2 norm (float64; zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def fit_logreg(x: np.ndarray, y: np.ndarray, lam: float, max_iter: int = MAX_ITER) -> LogisticRegression:
    """Fit on ``x`` [N, D] (L2-normalised here) and labels ``y`` [N]; penalty λ/N (``C = 1/λ``)."""
    model = LogisticRegression(C=1.0 / lam, fit_intercept=False, max_iter=max_iter, tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(l2_normalise_rows(x), np.asarray(y))
    return model


def logreg_top1(model: LogisticRegression, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy in percent of ``model`` on ``x`` [N, D] / ``y`` [N]."""
    pred = model.predict(l2_normalise_rows(x))
    return 100.0 * float(np.mean(pred == np.asarray(y)))


@dataclass
class LogregFit:
    model: LogisticRegression
    lam: float
    heldout_top1: dict[float, float]  # λ -> held-out top-1 of the model fit with it


def select_and_fit(train_x: np.ndarray, train_y: np.ndarray, held_x: np.ndarray, held_y: np.ndarray,
                   lambdas: Sequence[float] = DEFAULT_LAMBDAS, max_iter: int = MAX_ITER) -> LogregFit:
    """One fit per λ on (``train_x`` [N, D], ``train_y``); keep the best on the held-out images.

    Ties go to the larger λ (the simpler model). The held-out images only choose λ; the returned
    model is fit on the training images alone.
    """
    if len(np.unique(train_y)) < 2:
        raise ValueError("logistic regression needs at least two classes")
    best: LogregFit | None = None
    scores: dict[float, float] = {}
    for lam in sorted(lambdas, reverse=True):
        model = fit_logreg(train_x, train_y, lam, max_iter)
        scores[lam] = logreg_top1(model, held_x, held_y)
        if best is None or scores[lam] > best.heldout_top1[best.lam]:
            best = LogregFit(model=model, lam=lam, heldout_top1=scores)
    assert best is not None
    return best
