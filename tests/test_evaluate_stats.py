"""Cohort statistics: intervals inside each metric's range, a reproducible bootstrap, and paired
tests checked against SciPy and a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from xaimed.evaluate import stats
from xaimed.evaluate.report import summarise


@pytest.mark.parametrize("hits", [0, 1, 5, 9, 10])
def test_proportion_intervals_stay_in_zero_one(hits):
    values = [1.0] * hits + [0.0] * (10 - hits)
    d = stats.describe("pointing_game", values, 0.95, seed=0)
    assert d["interval"] == "wilson" and d["n"] == 10
    assert 0.0 <= d["ci_low"] <= d["mean"] <= d["ci_high"] <= 1.0
    # A Student t interval would be [0, 0] for all-0 and leave the range for 1/10 (mean 0.1,
    # t half-width 0.226); Wilson is not degenerate at the ends.
    assert d["ci_high"] - d["ci_low"] > 0.1


def test_wilson_matches_its_formula():
    # Wilson (1927): (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), 1 hit of 10.
    z, n, p = sps.norm.ppf(0.975), 10, 0.1
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    ci = stats.proportion_interval(1, 10, 0.95)
    assert ci.low == pytest.approx(centre - half) and ci.high == pytest.approx(centre + half)


@pytest.mark.parametrize(
    ("metric", "values"),
    [
        ("auroc", [1.0, 1.0, 0.999, 1.0, 0.98, 1.0]),
        ("mass_inside", [0.0, 0.001, 0.0, 0.02, 0.0]),
        ("dice_top", [0.2, 0.9, 0.5, 0.7, 0.1, 0.95, 0.4]),
        ("randomisation_spearman", [-1.0, -0.99, -1.0, -0.97]),
        ("method_agreement_spearman", [0.99, 1.0, 0.995, 1.0, 1.0]),
    ],
)
def test_bootstrap_intervals_of_bounded_metrics_stay_in_range(metric, values):
    d = stats.describe(metric, values, 0.95, seed=3)
    low, high = stats.RANGES[metric]
    assert d["interval"].startswith("bootstrap")
    assert low <= d["ci_low"] <= d["mean"] <= d["ci_high"] <= high
    assert min(values) <= d["ci_low"] and d["ci_high"] <= max(values)


def test_bootstrap_is_seeded_and_reproducible():
    values = list(np.random.default_rng(1).uniform(0.3, 0.9, size=12))
    a = stats.bootstrap_interval(values, 0.95, seed=7)
    b = stats.bootstrap_interval(values, 0.95, seed=7)
    c = stats.bootstrap_interval(values, 0.95, seed=8)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)
    assert a.method == "bootstrap BCa, 9999"


def test_bootstrap_edge_cases():
    assert stats.bootstrap_interval([0.4], 0.95, seed=0).low is None  # one case: no interval
    same = stats.bootstrap_interval([1.0, 1.0, 1.0], 0.95, seed=0)
    assert (same.low, same.high) == (1.0, 1.0)
    # Two cases: BCa's jackknife acceleration is undefined; the percentile interval is used.
    two = stats.bootstrap_interval([0.2, 0.6], 0.95, seed=0)
    assert two.method.startswith("bootstrap") and 0.2 <= two.low <= two.high <= 0.6


def test_wilcoxon_matches_scipy_and_the_hand_computed_effect_size():
    a = [0.91, 0.85, 0.77, 0.95, 0.60, 0.88, 0.70, 0.81]
    b = [0.80, 0.86, 0.65, 0.90, 0.61, 0.70, 0.72, 0.60]
    # Differences: .11 -.01 .12 .05 -.01 .18 -.02 .21; |d| ranks: 5, 1.5, 6, 4, 1.5, 7, 3, 8.
    # R+ = 5 + 6 + 4 + 7 + 8 = 30, R- = 1.5 + 1.5 + 3 = 6, r = (30 - 6) / 36.
    result = stats.wilcoxon_paired(a, b)
    reference = sps.wilcoxon(a, b)
    assert result["statistic"] == pytest.approx(float(reference.statistic)) == 6.0
    assert result["p_value"] == pytest.approx(float(reference.pvalue))
    assert result["effect_size"] == pytest.approx(24 / 36)
    assert result["n"] == 8 and result["n_nonzero"] == 8
    assert stats.wilcoxon_paired([1.0, 2.0], [1.0, 2.0])["p_value"] is None


def test_mcnemar_on_discordant_pairs():
    a = [1, 1, 1, 1, 1, 0, 1, 1]
    b = [0, 0, 0, 1, 1, 0, 0, 1]
    result = stats.mcnemar_paired(a, b)
    # 4 pairs where only a hits, none where only b does: two-sided exact p = 2 * 0.5^4.
    assert result["p_value"] == pytest.approx(0.125)
    assert result["effect_size"] == pytest.approx(7 / 8 - 3 / 8)


def test_summary_uses_the_interval_per_kind_and_compares_methods():
    rows = []
    rng = np.random.default_rng(0)
    for i in range(8):
        case = f"c{i}"
        good, bad = 0.8 + 0.02 * rng.standard_normal(), 0.5 + 0.02 * rng.standard_normal()
        rows += [
            {"case_id": case, "method": "ig", "target": "lesion", "metric": "auroc", "value": good},
            {"case_id": case, "method": "cam", "target": "lesion", "metric": "auroc", "value": bad},
            {"case_id": case, "method": "ig", "target": "lesion", "metric": "pointing_game",
             "value": 1.0},
            {"case_id": case, "method": "cam", "target": "lesion", "metric": "pointing_game",
             "value": float(i % 2)},
        ]  # fmt: skip
    summary = summarise(rows, confidence=0.95, threshold=0.5, warnings={}, seed=5)
    assert summary == summarise(rows, confidence=0.95, threshold=0.5, warnings={}, seed=5)
    ig = summary["metrics"]["ig"]
    assert ig["pointing_game"]["interval"] == "wilson"
    assert ig["pointing_game"]["ci_high"] == 1.0 and ig["pointing_game"]["ci_low"] < 1.0
    assert ig["auroc"]["interval"] == "bootstrap BCa, 9999" and ig["auroc"]["range"] == [0, 1]
    (auc,) = summary["comparisons"]["auroc"]
    assert auc["methods"] == ["ig", "cam"] and auc["better"] == "ig"
    assert auc["effect_size"] == 1.0 and auc["p_value"] == pytest.approx(2 / 2**8)
    (hit,) = summary["comparisons"]["pointing_game"]
    assert hit["test"].startswith("exact McNemar") and hit["effect_size"] == 0.5
