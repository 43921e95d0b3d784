"""Max-sensitivity: closed forms on a linear model, seeding, and agreement with Quantus."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from xaimed.evaluate.robustness import max_sensitivity

SHAPE = (16, 16, 16)


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(*SHAPE, generator=g)
    x = torch.randn(1, 1, *SHAPE, generator=g)
    return w, x


def test_a_map_that_ignores_the_input_has_sensitivity_zero(setup):
    w, x = setup
    saliency = lambda inputs: w.numpy()  # noqa: E731  (the gradient of a linear model)
    assert max_sensitivity(saliency, x, w.numpy(), samples=5, radius=0.1, seed=0) == 0.0


def test_input_times_gradient_equals_the_reference_with_the_same_draws(setup):
    w, x = setup
    explain = lambda inputs: (inputs[0, 0] * w).numpy()  # noqa: E731
    reference = explain(x)
    value = max_sensitivity(explain, x, reference, samples=6, radius=0.05, seed=3)
    # Independent: the draws are uniform in [-r, r] with r = 0.05 * the value range.
    g = torch.Generator().manual_seed(3)
    bound = 0.05 * float(x.max() - x.min())
    expected = max(
        float(np.linalg.norm(((torch.rand(x.shape, generator=g) * 2 - 1) * bound)[0, 0] * w))
        / float(np.linalg.norm(reference))
        for _ in range(6)
    )
    assert value == pytest.approx(expected, rel=1e-5)
    assert value == max_sensitivity(explain, x, reference, samples=6, radius=0.05, seed=3)


def test_agrees_with_quantus_max_sensitivity(setup):
    quantus = pytest.importorskip("quantus")
    w, x = setup
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(w.numel(), 2)).eval()
    explain = lambda inputs: (inputs[0, 0] * w).numpy()  # noqa: E731
    ours = max_sensitivity(explain, x, explain(x), samples=20, radius=0.02, seed=0)

    def explain_func(model, inputs, targets, **kwargs):
        return np.asarray(inputs) * w.numpy()[None, None]

    bound = 0.02 * float(x.max() - x.min())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.MaxSensitivity(
            nr_samples=20, lower_bound=bound, disable_warnings=True,
            return_nan_when_prediction_changes=False,
        )(
            model=model, x_batch=x.numpy(), y_batch=np.array([0]),
            a_batch=explain_func(None, x.numpy(), None), channel_first=True,
            explain_func=explain_func, device="cpu",
        )  # fmt: skip
    # Same definition (max over draws of ||e(x+d) - e(x)|| / ||e(x)||, d uniform in [-r, r]);
    # the draws come from different generators, so the values agree to sampling precision
    # (4096 voxels: about 1 %).
    assert ours == pytest.approx(float(theirs[0]), rel=0.05)
