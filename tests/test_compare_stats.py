"""The statistics of a comparison against hand computations and scipy (when installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reporter.compare.stats import bootstrap_delta, ece, macro_f1, mcnemar, spearman_rows
from reporter.metrics.classification import calibration


def test_mcnemar_exact_on_a_known_table() -> None:
    # b = 2, c = 8: p = 2 * P(X <= 2), X ~ Bin(10, 1/2) = 2 * (1 + 10 + 45) / 1024
    out = mcnemar(2, 8)
    assert out["test"] == "exact"
    assert out["p"] == pytest.approx(112 / 1024)
    assert mcnemar(8, 2)["p"] == out["p"]  # symmetric
    assert mcnemar(0, 0)["p"] == 1.0
    assert mcnemar(5, 5)["p"] == 1.0  # capped at 1


def test_mcnemar_chi2_for_many_discordant_pairs() -> None:
    out = mcnemar(30, 10)  # (|30 - 10| - 1)^2 / 40 = 9.025
    assert out["test"] == "chi2"
    assert out["statistic"] == pytest.approx(9.025)
    assert out["p"] == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))


def test_mcnemar_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(0, 7), (3, 9), (11, 12), (1, 20)]:
        assert mcnemar(b, c)["p"] == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue)
    assert mcnemar(40, 18)["p"] == pytest.approx(stats.chi2.sf((22 - 1) ** 2 / 58, 1))


def test_spearman_with_ties_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = np.maximum(rng.normal(size=(5, 16, 16)), 0)  # many exact zeros: ties
    b = np.maximum(a + rng.normal(scale=0.5, size=a.shape), 0)
    rho = spearman_rows(a, b)
    for i in range(5):
        expected = stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic
        assert rho[i] == pytest.approx(expected, abs=1e-12)


def test_spearman_by_hand_and_constant_maps() -> None:
    a = np.array([[1.0, 2.0, 3.0, 4.0], [1, 1, 1, 1], [1, 1, 1, 1], [4, 3, 2, 1]])
    b = np.array([[10.0, 20.0, 30.0, 40.0], [5, 5, 5, 5], [1, 2, 3, 4], [1, 2, 3, 4]])
    rho = spearman_rows(a, b)
    assert rho[0] == pytest.approx(1.0)  # same order
    assert rho[1] == 1.0  # nothing to rank on either side: nothing moved
    assert np.isnan(rho[2])  # a constant map against a varying one: undefined
    assert rho[3] == pytest.approx(-1.0)  # reversed
    # ties: ranks [0.5, 0.5, 2, 3] against [0, 1, 2, 3]: rho = 4.5 / sqrt(4.5 * 5)
    assert spearman_rows(np.array([[0.0, 0, 1, 2]]), np.array([[0.0, 1, 2, 3]]))[0] == (
        pytest.approx(4.5 / math.sqrt(4.5 * 5))
    )


def test_ece_is_the_audits_calibration() -> None:
    conf = np.array([0.95, 0.9, 0.4, 0.7, 0.99])
    right = np.array([True, False, False, True, True])
    assert ece(conf, right) == calibration(conf, right)[0]
    assert ece(np.zeros(0), np.zeros(0, bool)) is None


def test_macro_f1_by_hand() -> None:
    # class 0: tp 1, fp 1, fn 1 -> F1 0.5; class 1: tp 1, fp 1, fn 1 -> 0.5
    assert macro_f1(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0]), 2) == pytest.approx(0.5)


def test_bootstrap_interval_is_seeded_and_brackets_the_change() -> None:
    old = np.array([1] * 80 + [0] * 20, bool)
    new = np.array([1] * 60 + [0] * 40, bool)

    def stat(i: np.ndarray) -> tuple[float, float]:
        return float(old[i].mean()), float(new[i].mean())

    one = bootstrap_delta(stat, 100, np.random.default_rng(3), 500)
    two = bootstrap_delta(stat, 100, np.random.default_rng(3), 500)
    assert one == two
    assert one is not None and one[0] < -0.2 < one[1]
    assert bootstrap_delta(stat, 0, np.random.default_rng(0), 500) is None
    assert bootstrap_delta(stat, 100, np.random.default_rng(0), 0) is None
