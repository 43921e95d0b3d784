"""Agreement between methods and between checkpoints: known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from xaimed.evaluate.agreement import checkpoint_agreement, method_agreement


def test_method_agreement_of_every_pair():
    rng = np.random.default_rng(0)
    a = rng.random((6, 5, 4))
    b = a**2  # same ranks
    c = rng.random((6, 5, 4))
    pairs = method_agreement({"a": a, "b": b, "c": c})
    assert list(pairs) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert pairs[("a", "b")] == pytest.approx(1.0)
    assert pairs[("a", "c")] == pytest.approx(stats.spearmanr(a.ravel(), c.ravel()).statistic)


def test_checkpoint_agreement_is_the_mean_over_pairs():
    rng = np.random.default_rng(1)
    a = rng.random((6, 5, 4))
    reversed_ranks = a.max() - a
    value = checkpoint_agreement([a, a, reversed_ranks], absolute=False)
    assert value == pytest.approx((1.0 - 1.0 - 1.0) / 3)
    assert np.isnan(checkpoint_agreement([a]))
