"""Patch-incremental perturbation under tiling: the maps of whole tiled passes, less work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_method
from seg_models import TinySeg

from xaimed.config import TargetSection
from xaimed.engine.counting import CountingModel
from xaimed.engine.targets import TargetReduction
from xaimed.engine.tiling import TiledInference
from xaimed.evaluate.faithfulness import perturbation_curve

VOLUME = (16, 16, 16)


class _Case:
    case_id = "c"
    mask = None


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinySeg().eval().double()


def _x() -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(1, 1, *VOLUME, generator=gen, dtype=torch.float64)


def _scored(net: torch.nn.Module, x: torch.Tensor, score: str, *, hide: bool = False):
    """The tiled, region-reduced model; ``hide`` wraps it so that no engine recognises it
    (whole tiled passes: the reference)."""
    tiled = TiledInference(net, (8, 8, 8), overlap=0.5)
    spec = TargetSection.model_validate(
        {"region": "predicted", "reduction": "mean", "score": score}
    )
    reduction = TargetReduction(tiled, spec, output="logits")
    with torch.no_grad():
        reduction.fix_regions(tiled(x), x, _Case())  # type: ignore[arg-type]
    return torch.nn.Sequential(reduction) if hide else reduction


CASES = [
    ("occlusion", {"window": 4, "stride": 4, "engine": "auto"}),
    ("feature_ablation", {"grouping": {"kind": "grid", "size": 6}, "engine": "auto"}),
    ("shapley_sampling", {"samples": 2, "grouping": {"kind": "grid", "size": 8}}),
    ("kernel_shap", {"samples": 12, "grouping": {"kind": "grid", "size": 8}}),
    ("lime", {"samples": 12, "grouping": {"kind": "grid", "size": 8}}),
]


@pytest.mark.parametrize("score", ["logits", "probabilities"])
@pytest.mark.parametrize(("name", "params"), CASES, ids=[c[0] for c in CASES])
def test_patch_incremental_maps_equal_whole_tiled_passes(name, params, score):
    net, x = _net(), _x()
    plain, _, plain_passes = run_method(name, _scored(net, x, score, hide=True), x, **params)
    fast, details, passes = run_method(name, _scored(net, x, score), x, **params)
    scale = float(plain.abs().max())
    assert scale > 0
    # The standard of the exactness tests; the scores leave the engines as float32, whose
    # rounding of a region's score is ~2e-5 of these small drops.
    assert float((fast - plain).abs().max()) <= 1e-4 * scale
    # Box perturbations of a linear score go through the incremental engine inside the
    # patches (tests/test_tiled_incremental.py); the others recompute whole touched patches.
    if name in ("occlusion", "feature_ablation") and score == "logits":
        assert details["engine"] == "incremental"
        assert details["tiled"]["patches_per_pass"] == 27
        work = details
    else:
        assert details["engine"] == "patch_incremental"
        work = details["patch_incremental"]
        assert work["patches_per_pass"] == 27
    # Every perturbation touches only some patches: less work than whole passes.
    assert passes.full_pass_equivalent < plain_passes.full_pass_equivalent
    assert work["full_pass_equivalent"] == pytest.approx(passes.full_pass_equivalent, abs=1e-3)


def test_occlusion_counts_windows_and_the_work_they_took():
    net, x = _net(), _x()
    # Probabilities of blended logits do not split over patches: whole touched patches.
    _, details, passes = run_method(
        "occlusion", _scored(net, x, "probabilities"), x, window=4, stride=4, engine="auto"
    )
    assert details["windows"] == 64
    # Windows scored + the unperturbed input + the recorded reference pass.
    assert passes.forward == 64 + 2
    # A 4^3 window at stride 4 in 8^3 patches at stride 4 lies in 1 to 8 patches; 3 or 4
    # patch layers per axis make the average far below the 27 of a whole pass.
    per_window = (details["patch_incremental"]["patches_computed"] - 27) / 64
    assert 1 <= per_window <= 8
    assert passes.full_pass_equivalent == pytest.approx(1 + per_window * 64 / 27, abs=1e-2)


def test_the_plain_engine_stays_whole_passes():
    net, x = _net(), _x()
    _, details, passes = run_method(
        "occlusion", _scored(net, x, "logits"), x, window=8, stride=8, engine="plain"
    )
    assert details["engine"] == "plain" and "patch_incremental" not in details
    assert passes.full_pass_equivalent == passes.forward == 8 + 1


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
def test_deletion_and_insertion_curves_through_patches(kind):
    net, x = _net(), _x()
    # Important near one corner: the first steps change the corner's patches only.
    attribution = -np.sum(np.indices(VOLUME), axis=0).astype(np.float64)
    common = dict(kind=kind, baseline=torch.zeros_like(x), steps=10, batch_size=4)
    plain_model = CountingModel(_scored(net, x, "probabilities", hide=True))
    fast_model = CountingModel(_scored(net, x, "probabilities"))
    plain = perturbation_curve(plain_model, x, attribution, 1, **common)
    fast = perturbation_curve(fast_model, x, attribution, 1, **common)
    np.testing.assert_allclose(fast.scores, plain.scores, rtol=0, atol=1e-6)  # float32 scores
    assert fast_model.count.full_pass_equivalent < plain_model.count.full_pass_equivalent


def test_models_without_patches_or_slices_are_told_apart_with_the_reason():
    """Both partial engines find their pieces through one unwrapping of the scored model;
    what it is not, it says (the debug log and the incremental fallback carry the sentence)."""
    from xaimed.engine.patchwise import partial_scores, tiled_parts
    from xaimed.engine.scoring import scored_parts
    from xaimed.engine.slicewise import sliced_parts

    net, x = _net(), _x()
    with pytest.raises(ValueError, match="not xaimed's counting wrapper"):
        scored_parts(net)
    with pytest.raises(ValueError, match="has no target reduction"):
        scored_parts(CountingModel(net))
    tiled = CountingModel(_scored(net, x, "logits"))
    assert scored_parts(tiled) == (tiled, tiled.model)
    assert tiled_parts(tiled)[2] is tiled.model.model
    with pytest.raises(ValueError, match="not slice-wise"):
        sliced_parts(tiled)
    with pytest.raises(ValueError, match="does not reduce a segmentation"):
        tiled_parts(CountingModel(TargetReduction(net, TargetSection(), output="logits")))
    spec = TargetSection.model_validate({"region": "predicted", "reduction": "mean"})
    whole = TargetReduction(net, spec, output="logits")
    with torch.no_grad():
        whole.fix_regions(net(x), x, _Case())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tiling is not configured"):
        tiled_parts(CountingModel(whole))
    assert partial_scores(CountingModel(whole), x, 2) is None
