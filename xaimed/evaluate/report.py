"""The evaluation's tables: metrics.csv (one row per case, method, metric) and the JSON summary.

The summary gives, per method and metric, the cohort's mean, standard deviation and a
confidence interval of the mean chosen for the metric's kind (Wilson for proportions, a seeded
bootstrap over cases for continuous metrics; see :mod:`xaimed.evaluate.stats`), paired tests
between every two methods per metric over the cases both have, and the sanity verdicts counted
per method with the rule they were judged by.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from xaimed.evaluate.stats import compare, describe
from xaimed.writers.atomic import atomic_path

COLUMNS = ["case_id", "method", "target", "metric", "value", "detail"]
# Per-step rows of the randomisation cascade; summarised as curves, not as cohort means.
STEP_METRICS = ("cascade_spearman", "cascade_ssim")
VERDICT_METRICS = {
    "randomisation_verdict": "model_randomisation",
    "data_randomisation_verdict": "data_randomisation",
}


def write_metrics_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write one row per case, method, target and metric."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            value = row.get("value")
            text = (
                ""
                if value is None or (isinstance(value, float) and math.isnan(value))
                else (f"{value:.6g}")
            )
            writer.writerow({**{k: row.get(k, "") for k in COLUMNS}, "value": text})
    return path


def summarise(
    rows: list[dict[str, Any]],
    *,
    confidence: float,
    threshold: float,
    warnings: dict[str, str],
    seed: int = 0,
) -> dict[str, Any]:
    """The cohort summary: statistics per method and metric, paired tests, verdict counts.

    ``seed`` seeds the bootstrap intervals, so a summary is reproducible.
    """
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    # (metric, method) -> {(case, target): value}, for the paired comparisons.
    paired: dict[tuple[str, str], dict[tuple[str, str], float]] = defaultdict(dict)
    verdicts: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        metric, method = row["metric"], row["method"]
        if metric in STEP_METRICS:
            continue
        values[method][metric].append(float(row["value"]))
        if " vs " not in method:  # method agreement rows are already pairs
            paired[metric, method][row["case_id"], row.get("target", "")] = float(row["value"])
        if metric in VERDICT_METRICS:
            entry = verdicts[method].setdefault(
                VERDICT_METRICS[metric],
                {"threshold": threshold, "rule": f"pass when Spearman < {threshold:g}",
                 "pass": 0, "fail": 0, "undetermined": 0},
            )  # fmt: skip
            entry[str(row["detail"]).split(";")[0]] += 1
    return {
        "confidence": confidence,
        "interval": (
            "proportions (pointing game, verdicts): Wilson score interval; other metrics: "
            "bootstrap over cases of the mean (BCa, else percentile), seeded, within the "
            "metric's range"
        ),
        "seed": seed,
        "metrics": {
            method: {
                metric: describe(metric, v, confidence, seed=seed)
                for metric, v in by_metric.items()
            }
            for method, by_metric in values.items()
        },
        "comparisons": comparisons(paired),
        "verdicts": {method: dict(v) for method, v in verdicts.items()},
        "warnings": {m: w for m, w in warnings.items() if m in values},
    }


def comparisons(
    paired: dict[tuple[str, str], dict[tuple[str, str], float]],
) -> dict[str, list[dict[str, Any]]]:
    """Per metric, a paired test for every two methods over the cases (and targets) both have.

    Pairs without a finite value on both sides are left out; a metric with fewer than two
    methods has no comparisons.
    """
    by_metric: dict[str, list[str]] = defaultdict(list)
    for metric, method in paired:
        by_metric[metric].append(method)
    out: dict[str, list[dict[str, Any]]] = {}
    for metric, methods in by_metric.items():
        tests = []
        for i, first in enumerate(methods):
            for second in methods[i + 1 :]:
                a, b = paired[metric, first], paired[metric, second]
                keys = [k for k in a if k in b and math.isfinite(a[k]) and math.isfinite(b[k])]
                if keys:
                    tests.append(
                        compare(metric, first, [a[k] for k in keys], second, [b[k] for k in keys])
                    )
        if tests:
            out[metric] = tests
    return out


def write_json(record: dict[str, Any], path: Path) -> Path:
    """Write a JSON record (NaN as null)."""

    def clean(obj: Any) -> Any:
        if isinstance(obj, float) and math.isnan(obj):
            return None
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [clean(v) for v in obj]
        return obj

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean(record), indent=2, default=str) + "\n", encoding="utf-8")
    return path
