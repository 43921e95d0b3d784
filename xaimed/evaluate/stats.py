"""Cohort statistics that respect what each metric is: intervals and paired comparisons.

Medical cohorts are small (10-50 cases), so the interval is chosen per kind of metric:

- **Proportions** (0/1 per case: the pointing game, the randomisation verdicts): the Wilson
  score interval of the hit rate (SciPy's ``binomtest(...).proportion_ci``). It stays inside
  [0, 1] also for 0/n and n/n, where the normal approximation leaves the range.
- **Continuous metrics** (mass inside, AUROC, Dice, correlations, curve areas, distances): a
  seeded bootstrap over cases of the mean (SciPy's ``bootstrap``, BCa; the percentile interval
  where BCa is undefined, e.g. for two cases). Both take quantiles of resampled means, so they
  stay within the observed values and so inside the metric's range; the range is still applied
  as a guard and recorded.

Paired comparisons between two methods use the cases both were computed on: for continuous
metrics the Wilcoxon signed-rank test with the matched-pairs rank-biserial correlation as its
effect size (Kerby 2014); for proportions the exact McNemar test (a binomial test on the
discordant pairs) with the difference of hit rates.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 9999

# Metrics whose per-case value is 0 or 1.
PROPORTIONS = frozenset({"pointing_game", "randomisation_verdict", "data_randomisation_verdict"})
# The range each bounded metric can take; metrics not listed are unbounded (hausdorff95_mm and
# max_sensitivity are only bounded below, curve areas of logits not at all).
RANGES: dict[str, tuple[float, float]] = {
    **{m: (0.0, 1.0) for m in PROPORTIONS},
    **{m: (0.0, 1.0) for m in ("mass_inside", "auroc", "rank_accuracy", "dice_top", "iou_top")},
    **{
        m: (-1.0, 1.0)
        for m in (
            "randomisation_spearman",
            "randomisation_ssim",
            "data_randomisation_spearman",
            "data_randomisation_ssim",
            "checkpoint_agreement_spearman",
            "method_agreement_spearman",
        )
    },
    "hausdorff95_mm": (0.0, math.inf),
    "max_sensitivity": (0.0, math.inf),
}
# Which direction is better, for the comparisons' "better" field; metrics without a direction
# (the sanity and agreement correlations: what is "good" depends on the question) get none.
HIGHER_IS_BETTER = frozenset(
    {"pointing_game", "mass_inside", "auroc", "rank_accuracy", "dice_top", "iou_top",
     "insertion_auc"}
)  # fmt: skip
LOWER_IS_BETTER = frozenset({"deletion_auc", "hausdorff95_mm", "max_sensitivity"})


@dataclass(frozen=True)
class Interval:
    """A confidence interval of a cohort's mean and how it was made."""

    low: float | None
    high: float | None
    method: str


def _finite(values: Sequence[float]) -> np.ndarray:
    data = np.asarray(values, dtype=np.float64)
    return data[np.isfinite(data)]


def proportion_interval(hits: int, n: int, confidence: float) -> Interval:
    """Wilson score interval of ``hits`` out of ``n`` (None for n = 0)."""
    if n == 0:
        return Interval(None, None, "wilson")
    ci = stats.binomtest(int(hits), int(n)).proportion_ci(confidence, method="wilson")
    return Interval(max(0.0, float(ci.low)), min(1.0, float(ci.high)), "wilson")


def bootstrap_interval(
    values: Sequence[float],
    confidence: float,
    *,
    seed: int,
    bounds: tuple[float, float] = (-math.inf, math.inf),
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> Interval:
    """Bootstrap interval of the mean over cases: BCa, else percentile; seeded, clipped.

    One case has no interval (None); equal values give the degenerate interval at that value.
    """
    data = _finite(values)
    if data.size < 2:
        return Interval(None, None, "bootstrap")
    if np.all(data == data[0]):
        # Every resample has the same mean; SciPy would warn and return NaN.
        value = float(data[0])
        return Interval(value, value, "bootstrap (all values equal)")
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # BCa warns and returns NaN when its acceleration is undefined; then percentile.
            warnings.simplefilter("ignore")
            result = stats.bootstrap(
                (data,), np.mean, confidence_level=confidence, n_resamples=resamples,
                method=method, rng=np.random.default_rng(seed),
            )  # fmt: skip
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return Interval(
                max(bounds[0], low), min(bounds[1], high), f"bootstrap {method}, {resamples}"
            )
    return Interval(None, None, "bootstrap")


def describe(metric: str, values: Sequence[float], confidence: float, *, seed: int) -> dict:
    """n, mean, std and the metric's kind of confidence interval of the mean, with its method."""
    data = _finite(values)
    n = int(data.size)
    bounds = RANGES.get(metric, (-math.inf, math.inf))
    out: dict[str, Any] = {
        "n": n, "mean": None, "std": None, "ci_low": None, "ci_high": None,
        "interval": "wilson" if metric in PROPORTIONS else "bootstrap",
        "range": [_json_bound(b) for b in bounds],
    }  # fmt: skip
    if n == 0:
        return out
    out["mean"] = float(data.mean())
    out["std"] = float(data.std(ddof=1)) if n > 1 else 0.0
    if metric in PROPORTIONS:
        ci = proportion_interval(int(np.count_nonzero(data > 0.5)), n, confidence)
    else:
        ci = bootstrap_interval(data, confidence, seed=seed, bounds=bounds)
    out.update(ci_low=ci.low, ci_high=ci.high, interval=ci.method)
    return out


def _json_bound(value: float) -> float | None:
    return value if math.isfinite(value) else None


def wilcoxon_paired(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Wilcoxon signed-rank test of paired values ``a`` - ``b`` with its effect size.

    The effect size is the matched-pairs rank-biserial correlation r = (R+ - R-) / (R+ + R-)
    over the non-zero differences (in [-1, 1]; positive when ``a`` tends to be larger). SciPy
    gives the test but not this effect size, hence the few lines here. Zero differences are
    dropped (Wilcoxon's original treatment, SciPy's default). p is None when every difference
    is zero.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = x - y
    nonzero = d[d != 0]
    out: dict[str, Any] = {
        "test": "wilcoxon signed-rank (two-sided)",
        "n": int(d.size),
        "n_nonzero": int(nonzero.size),
        "median_difference": float(np.median(d)) if d.size else None,
        "statistic": None,
        "p_value": None,
        "effect_size": None,
        "effect_size_kind": "matched-pairs rank-biserial correlation",
    }
    if nonzero.size == 0:
        return out
    result = stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    ranks = stats.rankdata(np.abs(nonzero))
    plus, minus = float(ranks[nonzero > 0].sum()), float(ranks[nonzero < 0].sum())
    out.update(
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
        effect_size=(plus - minus) / (plus + minus),
    )
    return out


def mcnemar_paired(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Exact McNemar test of paired 0/1 values: a binomial test on the discordant pairs."""
    x, y = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    only_a, only_b = int(np.sum(x & ~y)), int(np.sum(~x & y))
    discordant = only_a + only_b
    return {
        "test": "exact McNemar (two-sided)",
        "n": int(x.size),
        "n_nonzero": discordant,
        "median_difference": None,
        "statistic": only_a,
        "p_value": float(stats.binomtest(only_a, discordant).pvalue) if discordant else None,
        "effect_size": float(x.mean() - y.mean()) if x.size else None,
        "effect_size_kind": "difference of hit rates",
    }


def compare(metric: str, first: str, a: Sequence[float], second: str, b: Sequence[float]) -> dict:
    """The paired test of methods ``first`` (values ``a``) and ``second`` for ``metric``.

    ``better`` names the method the effect favours for metrics with a direction (None for the
    others and for no effect); read it with the p-value.
    """
    result = (mcnemar_paired if metric in PROPORTIONS else wilcoxon_paired)(a, b)
    effect = result["effect_size"]
    better = None
    directed = metric in HIGHER_IS_BETTER or metric in LOWER_IS_BETTER
    if directed and effect is not None and effect != 0:
        better = first if (effect > 0) == (metric in HIGHER_IS_BETTER) else second
    return {"methods": [first, second], **result, "better": better}
