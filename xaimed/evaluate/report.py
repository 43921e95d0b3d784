"""The evaluation's tables: metrics.csv (one row per case, method, metric) and the JSON summary.

The summary gives, per method and metric, the cohort's mean, standard deviation and a
Student-t confidence interval of the mean (for 0/1 metrics such as the pointing game this is
the usual normal-approximation interval of a hit rate, and crude for few cases), plus the
sanity verdicts counted per method with the rule they were judged by.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

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


def interval(values: list[float], confidence: float) -> dict[str, float | int | None]:
    """n, mean, std and the t confidence interval of the mean (None where undefined)."""
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    n = int(data.size)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci_low": None, "ci_high": None}
    mean = float(data.mean())
    std = float(data.std(ddof=1)) if n > 1 else 0.0
    if n > 1:
        half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        low = high = None
    return {"n": n, "mean": mean, "std": std, "ci_low": low, "ci_high": high}


def summarise(
    rows: list[dict[str, Any]],
    *,
    confidence: float,
    threshold: float,
    warnings: dict[str, str],
) -> dict[str, Any]:
    """The cohort summary: statistics per method and metric, and verdict counts."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    verdicts: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        metric, method = row["metric"], row["method"]
        if metric in STEP_METRICS:
            continue
        values[method][metric].append(float(row["value"]))
        if metric in VERDICT_METRICS:
            entry = verdicts[method].setdefault(
                VERDICT_METRICS[metric],
                {"threshold": threshold, "rule": f"pass when Spearman < {threshold:g}",
                 "pass": 0, "fail": 0, "undetermined": 0},
            )  # fmt: skip
            entry[str(row["detail"]).split(";")[0]] += 1
    return {
        "confidence": confidence,
        "interval": "Student t interval of the cohort mean",
        "metrics": {
            method: {metric: interval(v, confidence) for metric, v in by_metric.items()}
            for method, by_metric in values.items()
        },
        "verdicts": {method: dict(v) for method, v in verdicts.items()},
        "warnings": {m: w for m, w in warnings.items() if m in values},
    }


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
