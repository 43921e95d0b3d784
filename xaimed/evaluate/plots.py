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


def plot_heatmap(summary: dict[str, Any], path: Path) -> Path:
    """Methods by metrics, cohort means written in the cells; colour scaled per column."""
    plt = _figure()
    table = summary["metrics"]
    methods = sorted(m for m in table if " vs " not in m)
    metrics = sorted({k for m in methods for k in table[m]})
    values = np.full((len(methods), len(metrics)), np.nan)
    for i, method in enumerate(methods):
        for j, metric in enumerate(metrics):
            stat = table[method].get(metric)
            if stat and stat["mean"] is not None:
                values[i, j] = stat["mean"]
    lo, hi = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        colour = np.where(hi > lo, (values - lo) / (hi - lo), 0.5)
    fig, ax = plt.subplots(figsize=(1.1 * len(metrics) + 2, 0.5 * len(methods) + 1.5))
    ax.imshow(np.nan_to_num(colour, nan=0.0), cmap="viridis", aspect="auto", vmin=0, vmax=1)
    for i in range(len(methods)):
        for j in range(len(metrics)):
            text = "–" if np.isnan(values[i, j]) else f"{values[i, j]:.3g}"
            light = np.nan_to_num(colour[i, j], nan=0.0) > 0.6  # viridis is light at the top
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="black" if light else "white")  # fmt: skip
    ax.set_xticks(range(len(metrics)), metrics, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(methods)), methods, fontsize=8)
    ax.set_title("cohort means (colour scaled per metric)")
    return _save(fig, path)
