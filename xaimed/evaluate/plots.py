"""The evaluation's pictures: mean deletion / insertion curves, the randomisation cascade, and a
method-by-metric heat map of the cohort means."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from xaimed.writers.atomic import atomic_path

_GRID = np.linspace(0.0, 1.0, 101)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _figure().close(fig)
    return path


def plot_curves(curves: list[dict[str, Any]], path: Path) -> Path:
    """Cohort-mean deletion and insertion curves per method (curves resampled to one grid)."""
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, kind in zip(axes, ("deletion", "insertion"), strict=True):
        by_method: dict[str, list[np.ndarray]] = defaultdict(list)
        for c in curves:
            if c["kind"] == kind:
                by_method[c["method"]].append(np.interp(_GRID, c["fractions"], c["scores"]))
        for method, ys in by_method.items():
            mean = np.mean(ys, axis=0)
            ax.plot(_GRID, mean, label=f"{method} (AUC {np.trapezoid(mean, _GRID):.3f})")
        ax.set_title(f"{kind} (mean over cases)")
        ax.set_xlabel("fraction of voxels perturbed, most important first")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("explained score")
    return _save(fig, path)


def plot_cascade(cascades: list[dict[str, Any]], threshold: float, path: Path) -> Path:
    """Mean Spearman (and SSIM) against the cascade step per method, threshold marked."""
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    layers: list[str] = []
    for key, ax in zip(("spearman", "ssim"), axes, strict=True):
        by_method: dict[str, list[list[float]]] = defaultdict(list)
        for c in cascades:
            by_method[c["method"]].append([1.0] + [s[key] for s in c["steps"]])
            layers = ["original"] + [s["layer"] for s in c["steps"]]
        for method, ys in by_method.items():
            ax.plot(np.nanmean(np.asarray(ys, dtype=float), axis=0), marker="o", label=method)
        if key == "spearman":
            ax.axhline(threshold, color="red", linestyle="--", label=f"threshold {threshold:g}")
        ax.set_title(f"model randomisation cascade: {key}")
        ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=7)
        ax.set_xlabel("layers re-initialised, from the output")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


# Which way is better, per metric: "higher", "lower"; metrics not listed are shown without
# a judgement (grey). Verdicts are pass rates (1 = every case passed).
DIRECTION = {
    "pointing_game": "higher", "mass_inside": "higher", "auroc": "higher",
    "rank_accuracy": "higher", "dice_top": "higher", "iou_top": "higher",
    "hausdorff95_mm": "lower",
    "deletion_auc": "lower", "insertion_auc": "higher",
    "randomisation_spearman": "lower", "randomisation_ssim": "lower",
    "data_randomisation_spearman": "lower", "data_randomisation_ssim": "lower",
    "randomisation_verdict": "higher", "data_randomisation_verdict": "higher",
    "max_sensitivity": "lower",
    "checkpoint_agreement_spearman": "higher",
}  # fmt: skip
_VERDICTS = {
    "randomisation_verdict": "model_randomisation",
    "data_randomisation_verdict": "data_randomisation",
}
_ARROW = {"higher": "↑", "lower": "↓"}


def goodness(values: np.ndarray, metrics: list[str]) -> np.ndarray:
    """Cell colours in [0, 1], 1 = best of its column; NaN where a value is missing or the
    metric has no direction.

    Verdict pass rates keep their absolute scale (0 none passed, 1 all passed); other metrics
    are scaled between the column's worst and best method (0.5 when all are equal).
    """
    out = np.full(values.shape, np.nan)
    for j, metric in enumerate(metrics):
        column = values[:, j]
        direction = DIRECTION.get(metric)
        if direction is None or np.isnan(column).all():
            continue
        if metric in _VERDICTS:
            out[:, j] = column
            continue
        lo, hi = np.nanmin(column), np.nanmax(column)
        scaled = (column - lo) / (hi - lo) if hi > lo else np.where(np.isnan(column), np.nan, 0.5)
        out[:, j] = scaled if direction == "higher" else 1 - scaled
    return out


def _cell_text(value: float, metric: str, method: str, summary: dict[str, Any]) -> str:
    if np.isnan(value):
        return "–"
    if metric in _VERDICTS:
        counts = summary.get("verdicts", {}).get(method, {}).get(_VERDICTS[metric])
        if counts:
            judged = counts["pass"] + counts["fail"]
            return f"{counts['pass']}/{judged} pass"
        return f"{value:.0%} pass"
    return f"{value:.3g}"


def plot_heatmap(summary: dict[str, Any], path: Path) -> Path:
    """Methods by metrics, cohort means in the cells, coloured by how good each is per metric.

    Colour runs from the column's worst (dark) to its best (bright) value, whichever direction
    is better for that metric (the arrow in the column label); verdicts show their pass counts
    and are coloured by the pass rate; missing values and metrics without a direction are grey.
    """
    plt = _figure()
    from matplotlib import colormaps

    table = summary["metrics"]
    methods = sorted(m for m in table if " vs " not in m)
    metrics = sorted({k for m in methods for k in table[m]})
    values = np.full((len(methods), len(metrics)), np.nan)
    for i, method in enumerate(methods):
        for j, metric in enumerate(metrics):
            stat = table[method].get(metric)
            if stat and stat["mean"] is not None:
                values[i, j] = stat["mean"]
    colour = goodness(values, metrics)
    cmap = colormaps["viridis"].with_extremes(bad="#d9d9d9")
    fig, ax = plt.subplots(figsize=(1.15 * len(metrics) + 2.5, 0.5 * len(methods) + 1.8))
    ax.imshow(np.ma.masked_invalid(colour), cmap=cmap, aspect="auto", vmin=0, vmax=1)
    for i, method in enumerate(methods):
        for j, metric in enumerate(metrics):
            text = _cell_text(values[i, j], metric, method, summary)
            # viridis is light at the top; grey cells take black text.
            light = np.isnan(colour[i, j]) or colour[i, j] > 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="black" if light else "white")  # fmt: skip
    labels = [f"{m} {_ARROW.get(DIRECTION.get(m, ''), '')}".strip() for m in metrics]
    ax.set_xticks(range(len(metrics)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(methods)), methods, fontsize=8)
    ax.set_title(
        "cohort means; colour per metric from worst (dark) to best (bright),\n"
        "↑ higher is better, ↓ lower is better; grey: no value",
        fontsize=9,
    )
    return _save(fig, path)
