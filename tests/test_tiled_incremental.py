"""The incremental engine inside the patches of a tiled segmentation: the maps of whole tiled
passes, with changed boxes followed through each patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_method
from test_incremental_segmentation import SkipUNet, _instance_unet, _monai_unet, _smooth
from torch import nn

from xaimed.config import TargetSection
from xaimed.engine.targets import TargetReduction
from xaimed.engine.tiling import TiledInference

VOLUME = (20, 20, 20)
PATCH = (12, 12, 12)  # overlap 0.25: two patches per axis, eight in all
WINDOW = {"window": 5, "stride": 5}  # 64 windows, many across patch borders
FEWER = {"window": 7, "stride": 7}  # 27 windows, for the slower networks


class _Case:
    case_id = "c"
    mask = None


def _trained(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Batch-norm statistics from a few passes in training mode; eval mode after."""
    net.train()
    with torch.no_grad():
        for k in range(3):
            net(x[..., :12, :12, :12] + 0.1 * k)
    return net.eval()


def _scored(
    net: nn.Module,
    x: torch.Tensor,
    *,
    score: str = "logits",
    reduction="sum",
    hide: bool = False,
    patch: tuple[int, int, int] = PATCH,
    region: str = "predicted",
) -> nn.Module:
    """The tiled, region-reduced model; ``hide`` wraps it so that no engine recognises it
    (whole tiled passes: the reference)."""
    tiled = TiledInference(net, patch, overlap=0.25)
    spec = TargetSection.model_validate({"region": region, "reduction": reduction, "score": score})
    reducer = TargetReduction(tiled, spec, output="logits")
    with torch.no_grad():
        reducer.fix_regions(tiled(x), x, _Case())  # type: ignore[arg-type]
    return nn.Sequential(reducer) if hide else reducer


@pytest.mark.parametrize(
    ("build", "reduction", "windows"),
    [(SkipUNet, "sum", WINDOW), (_monai_unet, "mean", FEWER)],
    ids=["skip_unet", "monai_unet_batch_norm"],
)
def test_tiled_incremental_occlusion_equals_whole_tiled_passes(build, reduction, windows):
    torch.manual_seed(0)
    x = _smooth(VOLUME)
    net = _trained(build(), x)
    plain, _, plain_count = run_method(
        "occlusion", _scored(net, x, reduction=reduction, hide=True), x, **windows
    )
    ours, details, count = run_method(
        "occlusion", _scored(net, x, reduction=reduction), x, engine="incremental", **windows
    )
    assert details["engine"] == "incremental"
    scale = float(plain.abs().max())
    assert scale > 0
    assert float((ours - plain).abs().max()) <= 1e-4 * scale
    tiled = details["tiled"]
    assert tiled["patches_per_pass"] == 8
    # One recorded pass of every patch; each window goes into every patch it touches.
    assert tiled["patches_recorded"] == 8
    n = details["windows"]
    assert n < tiled["window_patches"] <= n * 8
    assert details["whole_maps_from"] == []
    # Windows scored + the unoccluded input (recorded patch by patch).
    assert count.forward == n + 1
    # Less work than whole tiled passes, although windows spread far in 12^3 patches.
    assert count.full_pass_equivalent < plain_count.full_pass_equivalent / 2
    assert count.full_pass_equivalent == pytest.approx(details["full_pass_equivalent"], abs=1e-2)


def test_the_reference_alone_is_the_tiled_score():
    from xaimed.engine.counting import CountingModel
    from xaimed.methods.context import MethodContext
    from xaimed.methods.windows import TiledIncrementalWindows

    x = _smooth(VOLUME)
    net = _trained(SkipUNet(), x)
    scored = _scored(net, x, reduction="mean")
    ctx = MethodContext(
        model=CountingModel(scored), inputs=x, target=1, seed=0, batch_size=2, device=x.device
    )
    engine = TiledIncrementalWindows(ctx, torch.zeros_like(x), 1.0)
    with torch.no_grad():
        expected = float(scored(x)[0, 1])
    assert float(engine.reference) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert engine.sidecar_fields()["tiled"]["patches_recorded"] == 8


def test_the_tiled_scorer_takes_the_threshold_per_call():
    """Capped and exact windows from one tiled scorer, which has no threshold of its own."""
    import dataclasses

    from xaimed.engine.counting import CountingModel
    from xaimed.engine.incremental.tiled import build_tiled_scorer
    from xaimed.methods.windows import boxes_of

    torch.manual_seed(0)  # weights whose predicted region of label 1 is not empty
    x = _smooth(VOLUME)
    net = _trained(SkipUNet(), x)
    scorer = build_tiled_scorer(
        CountingModel(_scored(net, x, reduction="mean")),
        x,
        torch.zeros_like(x),
        target=1,
        batch_size=2,
    )
    assert "threshold" not in {f.name for f in dataclasses.fields(scorer)}
    lo, hi = boxes_of(VOLUME, (5, 5, 5), (5, 5, 5))
    exact = scorer.scores(lo, hi, label="exact", threshold=1.0)
    capped = scorer.scores(lo, hi, label="capped", threshold=0.25)
    again = scorer.scores(lo, hi, label="exact again", threshold=1.0)
    assert float((capped - exact).abs().max()) > 1e-4 * float(exact.abs().max())
    torch.testing.assert_close(again, exact)  # batches grow after the first call: rounding


def test_probabilities_fall_back_to_whole_patches():
    x = _smooth(VOLUME)
    net = _trained(SkipUNet(), x)
    _, details, _ = run_method(
        "occlusion", _scored(net, x, score="probabilities"), x, engine="auto", **WINDOW
    )
    assert details["engine"] == "patch_incremental"
    assert "does not split over patches" in details["fallback"]


def test_instance_norm_in_patches_exact_and_frozen():
    net, x = _instance_unet(), _smooth(VOLUME)
    plain, _, _ = run_method("occlusion", _scored(net, x, hide=True), x, **FEWER)
    exact, details, _ = run_method("occlusion", _scored(net, x), x, engine="incremental", **FEWER)
    scale = float(plain.abs().max())
    assert float((exact - plain).abs().max()) <= 1e-4 * scale
    assert "per-sample statistics" in details["whole_maps_from"][0]["reason"]
    frozen, fdetails, _ = run_method(
        "occlusion", _scored(net, x), x, engine="incremental",
        approximate={"freeze_norm_statistics": True}, **FEWER,
    )  # fmt: skip
    assert fdetails["approximate"]["freeze_norm_statistics"] is True
    assert len(fdetails["frozen_norm_statistics"]) >= 4
    assert fdetails["norm_statistics_correction"] == "first_order"
    assert fdetails["whole_maps_from"] == []
    assert float((frozen - plain).abs().max()) > 1e-4 * scale
    corr = np.corrcoef(frozen.flatten().numpy(), plain.flatten().numpy())[0, 1]
    print(f"frozen statistics: correlation {corr:.3f}")
    # 0.991 (a 7³ window is a fifth of a 12³ patch: a large change of its statistics).
    assert corr > 0.98


def _window_drops(scored: nn.Module, x: torch.Tensor, *, freeze: bool, correct: bool = True):
    """Drops of the 4³ windows at stride 4 from the tiled incremental engine."""
    from xaimed.engine.counting import CountingModel
    from xaimed.methods.context import MethodContext
    from xaimed.methods.windows import TiledIncrementalWindows, boxes_of

    ctx = MethodContext(
        model=CountingModel(scored), inputs=x, target=1, seed=0, batch_size=4, device=x.device
    )
    engine = TiledIncrementalWindows(ctx, torch.zeros_like(x), 1.0, freeze)
    engine.scorer.correct_norm_shift = correct
    lo, hi = boxes_of(tuple(x.shape[2:]), (4, 4, 4), (4, 4, 4))
    scores = engine.scores(lo, hi, label="occlusion")
    return (engine.reference - scores).double().numpy(), engine.sidecar_fields()


@pytest.mark.parametrize(
    "norm", ["instance", ("group", {"num_groups": 2})], ids=["instance", "group"]
)
def test_statistics_shift_correction_is_what_makes_frozen_norms_usable(norm):
    """With 16³ patches a 4³ window's effect through the shift of the norms' statistics
    outweighs its local effect: frozen statistics alone miss it, the first-order correction
    restores it."""
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(
        spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2),
        num_res_units=1, norm=norm,
    ).eval()  # fmt: skip
    x = _smooth((24, 24, 24))
    scored = _scored(net, x, patch=(16, 16, 16))
    exact, _ = _window_drops(scored, x, freeze=False)
    corrected, fields = _window_drops(scored, x, freeze=True)
    local, local_fields = _window_drops(scored, x, freeze=True, correct=False)
    assert fields["norm_statistics_correction"] == "first_order"
    assert local_fields["norm_statistics_correction"] is None
    scale = float(np.abs(exact).max())

    def quality(drops):
        return np.corrcoef(drops, exact)[0, 1], float(np.abs(drops - exact).max()) / scale

    (r_corrected, d_corrected), (r_local, d_local) = quality(corrected), quality(local)
    print(f"correlation {r_corrected:.4f} (local only {r_local:.4f})")
    # Instance norm: 0.998 against 0.83 (largest difference 8% against 66%).
    assert r_corrected > 0.99
    assert d_corrected < 0.15
    assert r_local < 0.95
    assert d_local > 2 * d_corrected


def test_corrected_frozen_norms_with_the_whole_volume_as_region_and_a_later_label():
    """``region: volume`` has one coefficient row for every label; the correction's score
    weights must come from it for label 1 too (it indexed a row per label)."""
    torch.manual_seed(0)
    net = _instance_unet().eval()
    x = _smooth(VOLUME)
    scored = _scored(net, x, region="volume")
    exact, _ = _window_drops(scored, x, freeze=False)
    corrected, fields = _window_drops(scored, x, freeze=True)
    assert fields["norm_statistics_correction"] == "first_order"
    assert np.corrcoef(corrected, exact)[0, 1] > 0.95


class TransposedUNet(nn.Module):
    """Strided convolutions down, transposed convolutions up (MONAI's kernel 3 with output
    padding, and kernel 2), a skip connection by addition."""

    def __init__(self) -> None:
        super().__init__()
        self.down1 = nn.Conv3d(1, 4, 3, stride=2, padding=1)
        self.down2 = nn.Conv3d(4, 8, 3, stride=2, padding=1)
        self.up2 = nn.ConvTranspose3d(8, 4, 3, stride=2, padding=1, output_padding=1)
        self.up1 = nn.ConvTranspose3d(4, 2, 2, stride=2, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = torch.relu(self.down1(x))
        return self.up1(torch.relu(self.up2(torch.relu(self.down2(skip)))) + skip)


def test_transposed_convolutions_follow_the_changed_box():
    from test_incremental_segmentation import _scored as _untiled

    torch.manual_seed(0)
    net, x = TransposedUNet().eval(), _smooth((24, 24, 24))
    plain, _, _ = run_method("occlusion", _untiled(net, x, "logits"), x, window=6, stride=6)
    ours, details, count = run_method(
        "occlusion", _untiled(net, x, "logits"), x, engine="incremental", window=6, stride=6
    )
    assert float((ours - plain).abs().max()) <= 1e-4 * float(plain.abs().max())
    # No op computed on whole maps: the transposed convolutions have their rule.
    assert details["whole_maps_from"] == []
    assert count.full_pass_equivalent < details["windows"] / 4
