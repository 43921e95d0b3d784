"""The evaluation table picture: direction per metric, missing cells, verdicts as pass counts."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np

from xaimed.evaluate.plots import DIRECTION, _cell_text, goodness, plot_heatmap

GREY = np.array([217, 217, 217]) / 255


def _stat(mean):
    return {"n": 6, "mean": mean, "std": 0.1, "ci_low": None, "ci_high": None}


def _summary(with_missing: bool):
    metrics = {
        "a": {"auroc": _stat(0.9), "deletion_auc": _stat(0.2), "randomisation_verdict": _stat(1.0)},
        "b": {"auroc": _stat(0.7), "deletion_auc": _stat(0.4), "randomisation_verdict": _stat(0.5)},
    }
    if with_missing:
        metrics["c"] = {"auroc": _stat(0.8)}
    verdicts = {
        "a": {"model_randomisation": {"pass": 6, "fail": 0, "undetermined": 0}},
        "b": {"model_randomisation": {"pass": 3, "fail": 3, "undetermined": 0}},
    }
    return {"metrics": metrics, "verdicts": verdicts}


def test_colour_says_which_is_better_whichever_the_direction():
    assert DIRECTION["auroc"] == "higher" and DIRECTION["deletion_auc"] == "lower"
    values = np.array([[0.9, 0.2, 1.0, np.nan], [0.7, 0.4, 0.5, 3.0]])
    metrics = ["auroc", "deletion_auc", "randomisation_verdict", "some_new_metric"]
    colour = goodness(values, metrics)
    # Method a is better on both: the higher AUROC and the lower deletion AUC are bright.
    np.testing.assert_allclose(colour[:, 0], [1.0, 0.0])
    np.testing.assert_allclose(colour[:, 1], [1.0, 0.0])
    # Verdicts keep the absolute pass rate; no direction or no value: no colour (grey).
    np.testing.assert_allclose(colour[:, 2], [1.0, 0.5])
    assert np.isnan(colour[:, 3]).all()


def test_verdict_cells_show_pass_counts_not_a_mean():
    summary = _summary(False)
    assert _cell_text(1.0, "randomisation_verdict", "a", summary) == "6/6 pass"
    assert _cell_text(0.5, "randomisation_verdict", "b", summary) == "3/6 pass"
    assert _cell_text(np.nan, "auroc", "a", summary) == "–"
    assert _cell_text(0.91234, "auroc", "a", summary) == "0.912"


def test_missing_cells_are_grey_not_the_lowest_colour(tmp_path):
    def grey_pixels(summary) -> int:
        image = mpimg.imread(plot_heatmap(summary, tmp_path / "table.png"))[..., :3]
        return int(np.all(np.abs(image - GREY) < 0.5 / 255, axis=-1).sum())

    # A few anti-aliased text pixels at most without missing values; whole cells with them.
    assert grey_pixels(_summary(False)) < 100
    assert grey_pixels(_summary(True)) > 10_000  # the two empty cells of method c
