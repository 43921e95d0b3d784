"""Sliding-window inference: seamless maps, gradients through tiles, refusals."""

from __future__ import annotations

import pytest
import torch
from seg_models import Pointwise, TinySeg
from tiny_models import TinyCNN

from xaimed.config import TargetSection
from xaimed.engine.counting import CountingModel
from xaimed.engine.targets import CaseRegions, TargetReduction
from xaimed.engine.tiling import TiledInference, axis_starts, blend_weights, patches
from xaimed.errors import ModelError
from xaimed.methods import registry
from xaimed.methods.context import MethodContext

PATCH = (8, 8, 8)
VOLUME = (32, 32, 32)  # four patches along each axis


def _seg() -> TinySeg:
    torch.manual_seed(0)
    return TinySeg().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(1, 1, *VOLUME, generator=torch.Generator().manual_seed(2))


def test_sampler_covers_the_volume_without_passing_the_border():
    assert axis_starts(32, 8, 0.5) == [0, 4, 8, 12, 16, 20, 24]
    assert axis_starts(30, 8, 0.5) == [0, 4, 8, 12, 16, 20, 22]  # last one shifted back
    assert axis_starts(6, 8, 0.5) == [0]
    # The step is truncated as MONAI's scan interval: 16 x 0.6 = 9.6 gives 9, not 10.
    assert axis_starts(40, 16, 0.4) == [0, 9, 18, 24]
    covered = torch.zeros(30, 17, 5)
    for box in patches((30, 17, 5), (8, 8, 8), 0.25):
        assert all(b.stop <= n for b, n in zip(box, (30, 17, 5), strict=True))
        covered[box] += 1
    assert covered.min() >= 1


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.25, 0.4, 0.5])
def test_tiled_output_equals_monai_sliding_window_inference(overlap, blend):
    """Same patches as MONAI's sliding window; constant blending gives MONAI's map, and
    Gaussian blending too once MONAI is given our weights (our floor is per axis, MONAI's on
    the product, a deliberate difference)."""
    inferers = pytest.importorskip("monai.inferers", reason="MONAI is not installed (dev extra)")
    model = _seg()
    x = torch.randn(1, 1, 40, 36, 28, generator=torch.Generator().manual_seed(3))
    ours_weights = blend_weights((16, 16, 16), blend, x.device)
    with torch.no_grad():
        ours = TiledInference(model, (16, 16, 16), overlap=overlap, blend=blend)(x)
        monai = inferers.sliding_window_inference(
            x,
            (16, 16, 16),
            4,
            model,
            overlap=overlap,
            mode=blend,
            sigma_scale=0.125,
            roi_weight_map=ours_weights if blend == "gaussian" else None,
        )
        stock = inferers.sliding_window_inference(
            x, (16, 16, 16), 4, model, overlap=overlap, mode=blend, sigma_scale=0.125
        )
    scale = float(monai.abs().max())
    assert scale > 0
    assert float((ours - monai).abs().max()) <= 1e-5 * scale
    if blend == "gaussian":  # MONAI's own floor on the product blends in far more border
        assert float((ours - stock).abs().max()) > 0.1 * scale


def test_a_pointwise_model_is_unchanged_by_tiling(x):
    torch.manual_seed(0)
    model = Pointwise().eval()
    tiled = TiledInference(model, PATCH, overlap=0.25, blend="constant")
    with torch.no_grad():
        torch.testing.assert_close(tiled(x), model(x), rtol=1e-6, atol=1e-6)


def test_tiled_output_of_a_translation_equivariant_model_is_seamless(x):
    model = _seg()
    with torch.no_grad():
        whole = model(x)
        tiled = TiledInference(model, PATCH, overlap=0.5, blend="gaussian")(x)
    # Only voxels at an inner patch border see zero padding where the whole volume has image;
    # the Gaussian weights leave them 0.25 % of a say next to a neighbour's centre.
    error = float((tiled - whole).abs().max()) / float(whole.abs().max())
    assert error < 5e-3


def _explain(name, model, x, **params):
    spec = TargetSection.model_validate({"region": "volume", "reduction": "mean"})
    reduction = TargetReduction(model, spec, output="logits")
    reduction.use(CaseRegions(segmentation=True))  # what configure() decides for a per-voxel output
    counting = CountingModel(reduction)
    ctx = MethodContext(model=counting, inputs=x, target=1, seed=0, batch_size=8, device=x.device)
    info = registry.find(name)
    out = info.run(ctx, info.params_model.model_validate(params))
    out = out if isinstance(out, torch.Tensor) else out.attribution
    return out.detach()


@pytest.mark.parametrize(
    ("name", "params"),
    [("saliency", {}), ("occlusion", {"window": 8, "stride": 8})],
)
def test_maps_through_tiles_match_the_untiled_maps(x, name, params):
    model = _seg()
    whole = _explain(name, model, x, **params)
    tiled = _explain(name, TiledInference(model, PATCH, overlap=0.5), x, **params)
    scale = float(whole.abs().max())
    assert scale > 0
    assert float((tiled - whole).abs().max()) < 1e-2 * scale


def test_a_model_that_is_not_fully_convolutional_is_refused(x):
    torch.manual_seed(0)
    tiled = TiledInference(TinyCNN().eval(), PATCH)
    with pytest.raises(ModelError, match="fully convolutional"):
        tiled(x)
    small = torch.zeros(1, 1, *PATCH)
    assert tiled(small).shape == (1, 2)  # no larger than a patch: runs whole
