"""Paired statistics for two audits of the same images (pure numpy, no I/O).

- :func:`mcnemar`: is the change in accuracy more than chance? Exact two-sided binomial test
  on the discordant pairs when there are fewer than :data:`EXACT_BELOW` of them, else the
  chi-square test with continuity correction (McNemar 1947; Edwards 1948).
- :func:`bootstrap_delta`: a percentile interval for the change of any statistic, resampling
  the matched images with replacement (the same draw for both audits: a paired bootstrap).
- :func:`spearman_rows`: Spearman's rank correlation of two stacks of maps, row by row, with
  ties given their average rank (many map cells are exactly zero after the method's ReLU).
- :func:`ece`: the expected calibration error over 15 equal-width bins, exactly as the audit
  computes it (:func:`reporter.metrics.classification.calibration`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from reporter.metrics.classification import calibration

__all__ = [
    "EXACT_BELOW",
    "bootstrap_delta",
    "ece",
    "macro_f1",
    "mcnemar",
    "spearman_rows",
]

EXACT_BELOW = 25
"""Discordant pairs below which McNemar's test uses the exact binomial distribution."""


def mcnemar(b: int, c: int) -> dict[str, float | int | str]:
    """McNemar's test of ``b`` (right before, wrong now) against ``c`` (wrong before, right now).

    Returns:
        ``{"b", "c", "test", "statistic", "p"}``: ``test`` is ``"exact"`` (two-sided binomial,
        p = min(1, 2 P(X <= min(b, c))) with X ~ Bin(b + c, 1/2)) or ``"chi2"`` (``(|b - c| - 1)^2
        / (b + c)``, one degree of freedom); ``p`` is 1.0 when no image changed.
    """
    b, c = int(b), int(c)
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "test": "exact", "statistic": 0.0, "p": 1.0}
    if n < EXACT_BELOW:
        tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
        return {"b": b, "c": c, "test": "exact", "statistic": float(min(b, c)),
                "p": min(1.0, 2.0 * tail)}  # fmt: skip
    stat = (abs(b - c) - 1.0) ** 2 / n
    return {"b": b, "c": c, "test": "chi2", "statistic": stat, "p": math.erfc(math.sqrt(stat / 2))}


def ece(confidence: np.ndarray, correct: np.ndarray) -> float | None:
    """Expected calibration error (15 bins) of the images given; ``None`` for none."""
    if len(confidence) == 0:
        return None
    return calibration(np.asarray(confidence, np.float64), np.asarray(correct, bool))[0]


def macro_f1(labels: np.ndarray, preds: np.ndarray, k: int) -> float:
    """Macro-averaged F1 over the ``k`` classes that have images (or predictions)."""
    cm = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k).astype(np.float64)
    tp = np.diag(cm)
    support, predicted = cm.sum(1), cm.sum(0)
    denom = support + predicted
    present = denom > 0
    f1 = np.where(present, 2 * tp / np.where(present, denom, 1), 0.0)
    return float(f1[present].mean()) if present.any() else float("nan")


def bootstrap_delta(
    statistic: Callable[[np.ndarray], tuple[float | None, float | None]],
    n: int,
    rng: np.random.Generator,
    reps: int,
    strata: np.ndarray | None = None,
) -> list[float] | None:
    """95% percentile interval of ``new - old`` for ``statistic(idx) -> (old, new)``.

    ``idx`` is one bootstrap sample of row indices (drawn with replacement from ``range(n)``,
    within each stratum when ``strata`` is given). Samples where either side is undefined are
    dropped; ``None`` when fewer than half of them remain.
    """
    if n == 0 or reps <= 0:
        return None
    deltas = []
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)] if strata is not None else []
    for _ in range(reps):
        if strata is None:
            idx = rng.integers(0, n, size=n)
        else:
            idx = np.concatenate([g[rng.integers(0, len(g), size=len(g))] for g in groups])
        old, new = statistic(idx)
        if old is not None and new is not None and math.isfinite(old) and math.isfinite(new):
            deltas.append(new - old)
    if len(deltas) < reps / 2:
        return None
    lo, hi = np.percentile(np.asarray(deltas), [2.5, 97.5])
    return [float(lo), float(hi)]


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks (0-based) of each row of ``x`` ``[n, d]``, ties sharing their average rank."""
    n, d = x.shape
    order = np.argsort(x, axis=1, kind="stable")
    s = np.take_along_axis(x, order, axis=1)
    starts = np.ones((n, d), bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    gid = (np.cumsum(starts, axis=1) - 1) + (np.arange(n) * d)[:, None]
    pos = np.broadcast_to(np.arange(d, dtype=np.float64), (n, d))
    total = np.bincount(gid.ravel(), weights=pos.ravel(), minlength=n * d)
    count = np.bincount(gid.ravel(), minlength=n * d)
    avg = total[gid] / np.maximum(count[gid], 1)
    ranks = np.empty((n, d))
    np.put_along_axis(ranks, order, avg, axis=1)
    return ranks


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho between ``a[i]`` and ``b[i]`` for every row (maps are flattened).

    Two constant maps (nothing to rank, nothing moved) give 1.0; a constant map against a
    varying one gives NaN (undefined).
    """
    if len(a) == 0:
        return np.zeros(0)
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    sa, sb = np.sqrt((ra * ra).sum(1)), np.sqrt((rb * rb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(1) / (sa * sb)
    rho = np.where((sa == 0) & (sb == 0), 1.0, rho)
    rho = np.where((sa == 0) ^ (sb == 0), np.nan, rho)
    return np.clip(rho, -1.0, 1.0)
