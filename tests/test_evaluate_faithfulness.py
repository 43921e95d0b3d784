"""Deletion and insertion curves: a closed-form reference on a linear model, batching, forward
call counts on the 64^3 sample model, and agreement with Quantus's pixel flipping."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from conftest import ROOT
from tiny_models import LinearModel

from xaimed.engine.counting import CountingModel
from xaimed.evaluate.faithfulness import (
    end_outputs,
    end_scores,
    forward_calls,
    perturbation_curve,
    unit_ranks,
)
from xaimed.sample.network import SampleCNN

SHAPE = (6, 5, 4)


def _linear(seed: int = 0) -> LinearModel:
    torch.manual_seed(seed)
    model = LinearModel(SHAPE, num_classes=2)
    with torch.no_grad():
        model.weight.normal_()
    return model.eval()


def _reference(model, x, attribution, target, baseline, steps, kind):
    """One numpy evaluation per step: the logit after perturbing the top round(k N / steps)."""
    w = model.weight[target].detach().numpy().astype(np.float64)
    xs, bs = x[0, 0].numpy().astype(np.float64), baseline[0, 0].numpy().astype(np.float64)
    order = np.argsort(-attribution.ravel(), kind="stable")
    out = []
    for k in range(steps + 1):
        hit = np.zeros(xs.size, bool)
        hit[order[: round(k * xs.size / steps)]] = True
        hit = hit.reshape(SHAPE)
        img = np.where(hit, bs, xs) if kind == "deletion" else np.where(hit, xs, bs)
        out.append(float((w * img).sum()))
    return np.asarray(out)


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_curve_equals_step_by_step_reference(kind, batch_size):
    model = _linear()
    x = torch.randn(1, 1, *SHAPE, generator=torch.Generator().manual_seed(1))
    baseline = torch.full_like(x, float(x.min()))
    attribution = (x[0, 0] * model.weight[1].detach()).numpy()  # input x gradient
    counting = CountingModel(model)
    curve = perturbation_curve(
        counting, x, attribution, 1, kind=kind, baseline=baseline, steps=12,
        batch_size=batch_size, output="logits", score="logit",
    )  # fmt: skip
    expected = _reference(model, x, attribution, 1, baseline, 12, kind)
    np.testing.assert_allclose(curve.scores, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(curve.fractions, [round(k * 120 / 12) / 120 for k in range(13)])
    assert curve.auc == pytest.approx(np.trapezoid(expected, curve.fractions), rel=1e-5)
    assert counting.count.forward_calls == forward_calls(12, batch_size)
    assert counting.count.forward == 13


@pytest.mark.parametrize("batch_size", [1, 5])
def test_shared_end_points_give_the_same_curves_with_two_passes_less_per_curve(batch_size):
    model = _linear(3)
    x = torch.randn(1, 1, *SHAPE, generator=torch.Generator().manual_seed(4))
    baseline = torch.full_like(x, float(x.min()))
    ends_counter = CountingModel(model)
    outputs = end_outputs(ends_counter, x, baseline, batch_size=batch_size)
    assert ends_counter.count.forward == 2
    ends = end_scores(outputs, 0, output="logits", score="logit")
    for seed in (0, 1):  # two maps of one input share the end points
        attribution = np.random.default_rng(seed).normal(size=SHAPE)
        for kind in ("deletion", "insertion"):
            counting = CountingModel(model)
            shared = perturbation_curve(
                counting, x, attribution, 0, kind=kind, baseline=baseline, steps=12,
                batch_size=batch_size, output="logits", score="logit", ends=ends,
            )  # fmt: skip
            assert counting.count.forward == 11
            expected = _reference(model, x, attribution, 0, baseline, 12, kind)
            np.testing.assert_allclose(shared.scores, expected, rtol=1e-5, atol=1e-5)
            assert shared.scores[0] != shared.scores[-1]


def test_a_faithful_map_deletes_faster_than_its_reverse():
    model = _linear()
    x = torch.randn(1, 1, *SHAPE, generator=torch.Generator().manual_seed(2))
    baseline = torch.zeros_like(x)
    good = (x[0, 0] * model.weight[1].detach()).numpy()
    run = lambda a, kind: perturbation_curve(  # noqa: E731
        model, x, a, 1, kind=kind, baseline=baseline, steps=20, batch_size=8,
        output="logits", score="logit",
    )  # fmt: skip
    assert run(good, "deletion").auc < run(-good, "deletion").auc
    assert run(good, "insertion").auc > run(-good, "insertion").auc


def test_probability_score_is_softmax_of_the_target():
    model = _linear()
    x = torch.randn(1, 1, *SHAPE, generator=torch.Generator().manual_seed(3))
    attribution = np.random.default_rng(0).random(SHAPE)
    curve = perturbation_curve(
        model, x, attribution, 0, kind="deletion", baseline=torch.zeros_like(x), steps=1,
        batch_size=2,
    )  # fmt: skip
    with torch.no_grad():
        expected = [torch.softmax(model(x), 1)[0, 0], torch.softmax(model(0 * x), 1)[0, 0]]
    np.testing.assert_allclose(curve.scores, [float(v) for v in expected], rtol=1e-6)


def test_groups_are_ranked_by_their_mean_and_removed_whole():
    attribution = np.zeros((4, 4, 2))
    attribution[2:4, 0:2, 0:2] = 5.0  # the strongest 2x2x2 cube
    attribution[0, 0, 0] = 30.0  # one strong voxel in a cube of mean 30 / 8 = 3.75
    ranks, n_units = unit_ranks(attribution, group_size=2)
    assert n_units == 2 * 2 * 1
    assert (ranks[2:4, 0:2, 0:2] == 0).all() and (ranks[0:2, 0:2, 0:2] == 1).all()
    ranks1, n1 = unit_ranks(attribution, group_size=1)
    assert n1 == attribution.size and ranks1[0, 0, 0] == 0


def _sample_model() -> torch.nn.Module:
    model = SampleCNN(in_channels=1, num_classes=2, width=8)
    weights = ROOT / "xaimed" / "sample" / "sample_cnn_state.pt"
    if weights.is_file():  # the trained sample model; its architecture alone counts the same
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def test_64_cubed_deletion_with_100_steps_runs_in_batches():
    torch.set_num_threads(2)
    batch = 16
    counting = CountingModel(_sample_model())
    x = torch.randn(1, 1, 64, 64, 64, generator=torch.Generator().manual_seed(0))
    attribution = np.random.default_rng(0).random((64, 64, 64))
    curve = perturbation_curve(
        counting, x, attribution, 1, kind="deletion", baseline=torch.zeros_like(x), steps=100,
        batch_size=batch,
    )  # fmt: skip
    assert len(curve.scores) == 101
    assert counting.count.forward_calls <= math.ceil(100 / batch) + 1
    assert counting.count.forward == 101


def test_agrees_with_quantus_pixel_flipping_on_a_3d_volume():
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(0)
    model = SampleCNN(width=2).eval()
    shape = (8, 8, 8)
    x = torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(4))
    attribution = np.random.default_rng(1).random(shape)  # no ties: one order for both
    step_voxels = 32
    steps = attribution.size // step_voxels
    ours = perturbation_curve(
        model, x, attribution, 1, kind="deletion", baseline=torch.full_like(x, float(x.min())),
        steps=steps, batch_size=8, output="logits", score="probability",
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Quantus's "black" baseline is the input's minimum, our `min`; it returns the scores
        # after each step, without the unperturbed start that our curve begins with.
        theirs = quantus.PixelFlipping(
            features_in_step=step_voxels, perturb_baseline="black", normalise=False,
            disable_warnings=True,
        )(
            model=model, x_batch=x.numpy(), y_batch=np.array([1]),
            a_batch=attribution[None, None].astype(np.float32), channel_first=True,
            softmax=True, device="cpu",
        )  # fmt: skip
    np.testing.assert_allclose(ours.scores[1:], np.asarray(theirs[0]), rtol=1e-4, atol=1e-6)
