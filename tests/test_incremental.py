"""Incremental occlusion: the same maps as the plain engine, on the sample model, MONAI's 3D
ResNet-18 and DenseNet-121 and a model using every supported op; fallbacks; approximate mode."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import blob_volume, oblique_affine, write_nifti
from torch import nn
from typer.testing import CliRunner

from xaimed.cli import app
from xaimed.engine.counting import CountingModel
from xaimed.errors import MethodError
from xaimed.methods import registry
from xaimed.methods.context import MethodContext
from xaimed.sample.network import SampleCNN
from xaimed.writers.manifest import read_manifest

SAMPLE = Path(__file__).parent.parent / "xaimed" / "sample"


def _run(name, model, x, *, batch_size=4, case=None, precision=None, **params):
    info = registry.find(name)
    counting = CountingModel(model, autocast_dtype=precision)
    ctx = MethodContext(
        model=counting,
        inputs=x,
        target=1,
        seed=0,
        batch_size=batch_size,
        device=x.device,
        case=case,
    )
    out = info.run(ctx, info.params_model.model_validate(params))
    assert out.attribution.shape == x.shape
    return out.attribution.detach(), out.details, counting.count


def _same_map(name, model, x, **params):
    """Plain and incremental maps of one method; equal to 1e-4 of the map's largest value."""
    plain, plain_details, _ = _run(name, model, x, **params)
    ours, details, count = _run(name, model, x, engine="incremental", **params)
    assert plain_details["engine"] == "plain"
    assert details["engine"] == "incremental"
    scale = float(plain.abs().max())
    assert scale > 0
    torch.testing.assert_close(ours, plain, rtol=0, atol=1e-4 * scale)
    return ours, details, count


def _volume(shape, channels=1, seed=1) -> torch.Tensor:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    data = ndimage.gaussian_filter(rng.normal(size=(channels, *shape)), (0, 1.5, 1.5, 1.5))
    data = (data - data.mean()) / data.std()
    return torch.from_numpy(data.astype(np.float32))[None]


def _with_statistics(model: nn.Module, shape, channels=1) -> nn.Module:
    """Non-trivial batch-norm statistics from a few forward passes in training mode."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, channels, *shape) * 2 + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def sample_model() -> nn.Module:
    model = SampleCNN(width=8)
    model.load_state_dict(torch.load(SAMPLE / "sample_cnn_state.pt", weights_only=True))
    return model.eval()


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    ("window", "stride", "baseline"),
    [
        (8, 8, 0.0),  # the benchmark's tiling of the volume
        ((5, 7, 4), (3, 4, 4), 0.5),  # stride < window, non-cubic, windows clipped at borders
        (6, 5, {"kind": "blur", "sigma_mm": 2.0}),
    ],
)
def test_sample_model_incremental_equals_plain(sample_model, window, stride, baseline):
    x = _volume((20, 24, 18))
    _, details, count = _same_map(
        "occlusion", sample_model, x, window=window, stride=stride, baseline=baseline
    )
    # One counted reference pass, one recorded pass and every window as an input scored;
    # the work of the windows is less than that many whole forward passes.
    assert count.forward == details["windows"] + 2
    assert 1 < count.full_pass_equivalent < details["windows"] + 2
    assert details["full_pass_equivalent"] == pytest.approx(
        count.full_pass_equivalent - 2, abs=1e-3
    )
    assert details["windows_computed"] == details["windows"]
    assert details["whole_maps_from"] == []


def test_multi_channel_input_and_border_windows():
    torch.manual_seed(0)
    model = _with_statistics(SampleCNN(in_channels=2, width=4), (16, 16, 16), channels=2)
    x = _volume((20, 17, 13), channels=2)
    _same_map("occlusion", model, x, window=(6, 5, 7), stride=(5, 4, 3), baseline="min")


def test_monai_resnet18_incremental_equals_plain():
    from monai.networks.nets import resnet18

    torch.manual_seed(0)
    model = _with_statistics(
        resnet18(spatial_dims=3, n_input_channels=1, num_classes=2), (32, 32, 32)
    )
    x = _volume((32, 32, 32))
    _, details, _ = _same_map(
        "occlusion", model, x, window=(12, 16, 12), stride=(10, 16, 11), baseline=0.3
    )
    assert details["whole_maps_from"] == []


def test_monai_densenet121_incremental_equals_plain():
    from monai.networks.nets import DenseNet121

    torch.manual_seed(0)
    model = _with_statistics(DenseNet121(spatial_dims=3, in_channels=1, out_channels=2), (32,) * 3)
    x = _volume((32, 32, 32))
    _, details, _ = _same_map("occlusion", model, x, window=16, stride=16, baseline=0.0)
    assert details["whole_maps_from"] == []


class EveryOp(nn.Module):
    """Strided, dilated, grouped and 'same'-padded convolutions, pooling in ceil mode and with
    padding, in-place activations, residual sums, concatenation, trilinear and nearest
    upsampling, scalar arithmetic and a functional head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(2, 6, kernel_size=(3, 5, 3), padding=(1, 2, 1))
        self.bn = nn.BatchNorm3d(6)
        self.act = nn.ReLU(inplace=True)
        self.dilated = nn.Conv3d(6, 6, 3, padding=2, dilation=2, groups=3)
        self.same = nn.Conv3d(6, 4, 4, padding="same")
        self.prelu = nn.PReLU(4)
        self.pool = nn.MaxPool3d(3, stride=2, ceil_mode=True)
        self.avg = nn.AvgPool3d(3, stride=1, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.down = nn.Conv3d(10, 8, 3, stride=(2, 1, 2), padding=1)
        self.drop = nn.Dropout3d(0.3)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn(self.stem(x)))
        y = y + 0.5 * F.leaky_relu(self.dilated(y), 0.1)
        z = self.prelu(self.same(y))
        p = self.pool(z)
        u = F.interpolate(self.avg(p), scale_factor=2, mode="trilinear") + self.up(p)
        w = torch.cat([torch.sigmoid(u) * 2, y], 1)
        w = F.silu(self.drop(self.down(w))) - 1.0
        return self.fc(w.mean(dim=(2, 3, 4)).view(w.size(0), -1))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_every_supported_op_incremental_equals_plain():
    torch.manual_seed(0)
    model = _with_statistics(EveryOp(), (16, 16, 16), channels=2).double()
    x = _volume((16, 16, 16), channels=2).double()
    _, details, _ = _same_map("occlusion", model, x, window=(4, 5, 3), stride=3, baseline=0.2)
    assert details["whole_maps_from"] == []


def test_feature_ablation_on_a_grid_is_incremental(sample_model):
    x = _volume((24, 24, 24))
    _, details, _ = _same_map(
        "feature_ablation", sample_model, x, grouping={"kind": "grid", "size": [5, 8, 7]}
    )
    assert details["grouping"]["groups"] == details["windows_computed"] == 5 * 3 * 4


def test_feature_ablation_engine_needs_a_grid(sample_model):
    x = _volume((16, 16, 16))
    grouping = {"kind": "slic", "segments": 8}
    _, details, _ = _run("feature_ablation", sample_model, x, grouping=grouping, engine="auto")
    assert details["engine"] == "plain"
    with pytest.raises(MethodError, match="grouping kind: grid"):
        _run("feature_ablation", sample_model, x, grouping=grouping, engine="incremental")


# ---------------------------------------------------------------- fallbacks


class SortsLate(nn.Module):
    """A conv layer, then torch.sort over the channels: no box rule for the sort."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv3d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sort(torch.relu(self.conv(x)), dim=1).values
        return self.fc(self.conv2(y).mean(dim=(2, 3, 4)))


class SortsFirst(SortsLate):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sort(x, dim=2).values
        return self.fc(torch.relu(self.conv(y)).mean(dim=(2, 3, 4)))


def test_an_op_without_rule_continues_on_whole_maps(caplog):
    torch.manual_seed(0)
    model = SortsLate().eval().double()
    x = _volume((12, 12, 12)).double()
    with caplog.at_level(logging.INFO, logger="xaimed"):
        _, details, _ = _same_map("occlusion", model, x, window=4, stride=3)
    assert details["whole_maps_from"] == [
        {"node": "sort", "op": "sort", "reason": "its output is not a 3D feature map"}
    ]
    assert "sort (sort) has no changed-box rule" in caplog.text


@pytest.mark.parametrize("kind", ["first_op", "torchscript"])
def test_models_that_cannot_be_incremental_fall_back_whole(kind, caplog):
    torch.manual_seed(0)
    model: nn.Module = SortsFirst().eval()
    x = _volume((12, 12, 12))
    if kind == "torchscript":
        model = torch.jit.script(SortsLate().eval())
    plain, _, _ = _run("occlusion", model, x, window=4, stride=4)
    with caplog.at_level(logging.INFO, logger="xaimed"):
        ours, details, count = _run("occlusion", model, x, window=4, stride=4, engine="auto")
    torch.testing.assert_close(ours, plain)
    assert details["engine"] == "plain" and details["engine_requested"] == "auto"
    reason = {"first_op": "its first op, sort (sort)", "torchscript": "TorchScript"}[kind]
    assert reason in details["fallback"]
    assert "occlusion: the plain engine is used" in caplog.text
    assert count.forward == details["windows"] + 1
    with pytest.raises(MethodError, match="engine: incremental cannot run on this model"):
        _run("occlusion", model, x, window=4, stride=4, engine="incremental")


def test_wrapped_models_fall_back_whole(sample_model):
    class Wrapper(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    x = _volume((12, 12, 12))
    info = registry.find("occlusion")
    ctx = MethodContext(
        model=CountingModel(Wrapper(sample_model)),
        inputs=x,
        target=1,
        seed=0,
        batch_size=4,
        device=x.device,
        network=sample_model,
    )
    out = info.run(ctx, info.params_model.model_validate({"window": 6, "engine": "auto"}))
    assert out.details["fallback"] == "the scored model wraps the network in an unknown way"


# ---------------------------------------------------------------- approximate mode


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1])


def test_approximate_mode_correlates_with_the_exact_map(sample_model):
    from xaimed.sample.phantom import make_phantom

    image = make_phantom(seed=3, lesion=True, shape=(32, 32, 32), spacing=(6.0, 6.0, 6.0)).image
    x = torch.from_numpy(((image - image.mean()) / image.std()).astype(np.float32))[None, None]
    exact, _, _ = _run("occlusion", sample_model, x, window=4, stride=4, engine="incremental")
    approximate = {"projective_threshold": 0.75, "refine": {"top_fraction": 0.5}}
    ours, details, _ = _run(
        "occlusion",
        sample_model,
        x,
        window=4,
        stride=4,
        engine="incremental",
        approximate=approximate,
    )
    assert _correlation(ours, exact) >= 0.95
    assert details["approximate"] == {
        "projective_threshold": 0.75,
        "refine": {
            "coarse_window": [8, 8, 8],  # twice the window unless given
            "coarse_windows": 64,
            "fine_windows_computed": 256,
            "fine_windows_estimated": 256,
        },
        "freeze_norm_statistics": False,
    }
    assert details["windows_computed"] == 64 + 256


def test_one_scorer_scores_capped_and_exact_windows_without_being_changed(sample_model):
    """The projective threshold is an argument of each scoring call, not a setting on the
    scorer that callers flip (refinement scores coarse windows exactly, fine ones capped)."""
    import dataclasses

    from xaimed.engine.incremental import build_incremental_scorer
    from xaimed.methods.windows import boxes_of

    x = _volume((16, 16, 16))
    scorer = build_incremental_scorer(
        sample_model, x, torch.zeros_like(x), target=1, batch_size=4, autocast_dtype=None
    )
    assert "threshold" not in {f.name for f in dataclasses.fields(scorer)}
    lo, hi = boxes_of((16, 16, 16), (4, 4, 4), (4, 4, 4))
    exact = scorer.scores(lo, hi, label="exact", threshold=1.0)
    capped = scorer.scores(lo, hi, label="capped", threshold=0.25)
    again = scorer.scores(lo, hi, label="exact again", threshold=1.0)
    assert float((capped - exact).abs().max()) > 1e-4 * float(exact.abs().max())
    torch.testing.assert_close(again, exact)  # batches grow after the first call: rounding


def test_refinement_also_runs_on_the_plain_engine(sample_model):
    x = _volume((16, 16, 16))
    approximate = {"projective_threshold": 0.5, "refine": {"window": 8, "top_fraction": 1.0}}
    plain, _, _ = _run("occlusion", sample_model, x, window=4, stride=4)
    ours, details, _ = _run(
        "occlusion", sample_model, x, window=4, stride=4, approximate=approximate
    )
    torch.testing.assert_close(ours, plain)  # every fine window computed: the exact map
    assert details["approximate"]["projective_threshold"] == "not applied (plain engine)"


# ---------------------------------------------------------------- through the command


def test_explain_records_the_engine_in_the_sidecar(tmp_path, make_config):
    folder = tmp_path / "in"
    write_nifti(folder / "case.nii.gz", blob_volume(), oblique_affine((2.0, 2.0, 2.0), "RAS"))
    methods = [
        {"name": "occlusion", "id": "plain", "params": {"window": 6, "stride": 4}},
        {"name": "occlusion", "id": "fast", "params": {"window": 6, "stride": 4, "engine": "auto"}},
    ]
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["explain", str(folder), "--config", str(make_config(methods=methods)), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    maps, sidecars = {}, {}
    for name in ("plain", "fast"):
        sidecars[name] = json.loads((out / "case" / f"case_{name}.json").read_text())
        import nibabel as nib

        maps[name] = np.asarray(nib.load(out / "case" / f"case_{name}.nii.gz").dataobj)
    assert sidecars["fast"]["method_details"]["engine"] == "incremental"
    assert sidecars["fast"]["method_details"]["engine_requested"] == "auto"
    assert sidecars["plain"]["method_details"]["engine"] == "plain"
    assert sidecars["fast"]["method"]["params"]["engine"] == "auto"
    scale = float(np.abs(maps["plain"]).max())
    np.testing.assert_allclose(maps["fast"], maps["plain"], rtol=0, atol=1e-4 * scale)
    # The work done is reported: every window as an input scored (issue: it said 2), and the
    # equivalent whole passes, fewer than the windows.

    rows = {row["method"]: row for row in read_manifest(out / "manifest.csv")}
    windows = sidecars["fast"]["method_details"]["windows"]
    assert int(rows["fast"]["forward_passes"]) == windows + 2
    assert int(rows["plain"]["forward_passes"]) == windows + 1
    passes = sidecars["fast"]["passes"]
    assert passes["forward"] == windows + 2
    assert 1 < passes["full_pass_equivalent"] < windows
    assert sidecars["plain"]["passes"]["full_pass_equivalent"] == windows + 1
