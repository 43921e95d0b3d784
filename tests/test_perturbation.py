"""Perturbation methods against Captum and MONAI, closed forms, invariances and the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import oblique_affine, run_method
from tiny_models import LinearModel, TinyCNN

from xaimed.config import PreprocessingSection
from xaimed.engine.perturb import Evaluator, ProgressMeter
from xaimed.errors import InputError, MethodError
from xaimed.methods.casefiles import CaseFiles
from xaimed.methods.groupings import grid_labels
from xaimed.preprocess import prepare

SHAPE = (16, 16, 16)


def _cnn(in_channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    model = TinyCNN(in_channels=in_channels).eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
    return model


def _linear(shape=SHAPE) -> LinearModel:
    torch.manual_seed(0)
    model = LinearModel(shape)
    with torch.no_grad():
        model.weight.normal_()
    return model.eval()


def _run(name, model, x, *, target=1, batch_size=4, seed=0, case=None, progress=None, **params):
    return run_method(
        name, model, x, context={"case": case, "progress": progress}, target=target,
        batch_size=batch_size, seed=seed, **params,
    )  # fmt: skip


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Equal to 1e-5 relative (of the map's scale, so that near-zero voxels do not dominate)."""
    scale = float(theirs.abs().max())
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-5, atol=1e-5 * scale)


class _Centred(torch.nn.Module):
    """A model in float64 whose scores are centred on the unperturbed input's.

    A score drop is a difference of two nearly equal scores; in float32 that difference
    carries an error of a few ulp of the score itself, which is the size of the drop of a
    small window. Comparing in float64, with scores near 0 (the counting wrapper hands
    scores on in float32), tests the definitions, not float32 rounding.
    """

    def __init__(self, model: torch.nn.Module, x: torch.Tensor) -> None:
        super().__init__()
        self.model = model.double()
        with torch.no_grad():
            self.register_buffer("centre", self.model(x.double())[0].clone())
        self.eval()  # MONAI's eval_mode restores train() on modules that were training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) - self.centre


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(1, 1, *SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("window", "stride"), [(4, 4), (5, 4), ((4, 6, 3), (3, 5, 3))])
def test_occlusion_equals_captum(x, window, stride):
    from captum.attr import Occlusion

    x = x.double()
    model = _Centred(_cnn(), x)
    ours, details, count = _run("occlusion", model, x, window=window, stride=stride, baseline=0.5)
    w = (window,) * 3 if isinstance(window, int) else window
    s = (stride,) * 3 if isinstance(stride, int) else stride
    theirs = Occlusion(model).attribute(
        x, sliding_window_shapes=(1, *w), strides=(1, *s), baselines=0.5, target=1
    )
    _close(ours, theirs)
    assert count.forward == details["windows"] + 1 == details["perturbations"] + 1


def test_occlusion_windows_are_clipped_at_the_border_never_wrapped():
    # Only the last voxel along axis 0 matters; a window starting at 12 of width 5 is clipped
    # to 12..15, so voxels 0..3 (where a wrapped window would land) get nothing.
    weight = torch.zeros(1, 1, *SHAPE)
    weight[0, 0, 15] = 1.0
    model = _Weighted(weight)
    x = torch.ones(1, 1, *SHAPE)
    attr, details, _ = _run(
        "occlusion", model, x, target=0, window=(5, 16, 16), stride=(4, 16, 16), baseline=0.0
    )
    assert details["windows"] == 4  # starts 0, 4, 8, 12
    assert float(attr[0, 0, :4].abs().max()) == 0.0
    assert float(attr[0, 0, 15].min()) > 0


class _Weighted(torch.nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).flatten(1).sum(1, keepdim=True)


def test_feature_ablation_equals_captum_on_a_grid(x):
    from captum.attr import FeatureAblation

    x = x.double()
    model = _Centred(_cnn(), x)
    ours, details, count = _run(
        "feature_ablation", model, x, grouping={"kind": "grid", "size": [4, 8, 5]}, baseline="min"
    )
    mask = torch.from_numpy(grid_labels(SHAPE, (4, 8, 5)))[None, None]
    theirs = FeatureAblation(model).attribute(
        x, baselines=float(x.min()), feature_mask=mask, target=1
    )
    _close(ours, theirs)
    assert details["grouping"]["groups"] == int(mask.max()) + 1 == count.forward - 1


@pytest.mark.parametrize("batch_size", [1, 7])
def test_shapley_sampling_equals_captum(x, batch_size):
    from captum.attr import ShapleyValueSampling

    x = x.double()
    model = _Centred(_cnn(), x)
    ours, details, count = _run(
        "shapley_sampling",
        model,
        x,
        seed=5,
        batch_size=batch_size,
        samples=3,
        grouping={"kind": "grid", "size": 8},
        baseline=0.0,
    )
    mask = torch.from_numpy(grid_labels(SHAPE, (8, 8, 8)))[None, None]
    torch.manual_seed(5)
    theirs = ShapleyValueSampling(model).attribute(
        x, baselines=0.0, feature_mask=mask, target=1, n_samples=3
    )
    _close(ours, theirs)
    assert count.forward == 1 + 3 * 8 == details["perturbations"] + 1
    assert details["permutations"] == 3


def test_batch_size_does_not_change_any_map(x):
    model = _cnn()
    grid = {"kind": "grid", "size": 8}
    for name, params in [
        ("occlusion", {"window": 6, "stride": 5}),
        ("feature_ablation", {"grouping": grid}),
        ("kernel_shap", {"grouping": grid, "samples": 20}),
        ("lime", {"grouping": grid, "samples": 20}),
    ]:
        one, _, c1 = _run(name, model, x, batch_size=1, **params)
        many, _, c9 = _run(name, model, x, batch_size=9, **params)
        torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-6)
        assert c1.forward == c9.forward and c1.forward_calls > c9.forward_calls


def test_kernel_shap_and_lime_recover_an_additive_model_exactly(x):
    # For a linear model, removing group g lowers the score by sum_g w * (x - b): exactly the
    # Shapley value of g, and the coefficients of an exact linear fit.
    model = _linear()
    grid = {"kind": "grid", "size": 8}
    groups = torch.from_numpy(grid_labels(SHAPE, (8, 8, 8)))
    contribution = (x[0, 0] * model.weight[1].detach()).flatten()
    per_group = torch.zeros(8).index_add_(0, groups.flatten(), contribution)
    expected = per_group[groups][None, None]
    shap, _, count = _run("kernel_shap", model, x, grouping=grid, samples=40, baseline="zero")
    torch.testing.assert_close(shap, expected, rtol=1e-4, atol=1e-4)
    assert count.forward == 42
    lime_map, details, _ = _run(
        "lime", model, x, grouping=grid, samples=64, alpha=0.0, baseline="zero"
    )
    torch.testing.assert_close(lime_map, expected, rtol=1e-4, atol=1e-4)
    assert details["intercept"] == pytest.approx(0.0, abs=1e-4)
    sv, _, _ = _run("shapley_sampling", model, x, grouping=grid, samples=2, baseline="zero")
    torch.testing.assert_close(sv, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["shapley_sampling", "kernel_shap", "lime"])
def test_random_methods_repeat_exactly_and_depend_on_the_seed(x, name):
    model = _cnn()
    params = {"grouping": {"kind": "grid", "size": 8}, "samples": 6}
    a, _, _ = _run(name, model, x, seed=3, **params)
    b, _, _ = _run(name, model, x, seed=3, **params)
    c, _, _ = _run(name, model, x, seed=4, **params)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_noise_baseline_is_seeded(x):
    model = _cnn()
    noise = {"kind": "noise", "scale": 1.0}
    a, d, _ = _run("occlusion", model, x, seed=1, window=8, stride=8, baseline=noise)
    b, _, _ = _run("occlusion", model, x, seed=1, window=8, stride=8, baseline=noise)
    c, _, _ = _run("occlusion", model, x, seed=2, window=8, stride=8, baseline=noise)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert d["baseline"] == {"kind": "noise", "scale": 1.0}


class _OomAbove(torch.nn.Module):
    """Raises an out-of-memory error for batches larger than ``limit``, like a full GPU."""

    def __init__(self, model: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.model, self.limit, self.failures = model, limit, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            self.failures += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(x)


def test_out_of_memory_halves_the_batch_and_gives_the_same_map(x):
    model = _cnn()
    reference, _, _ = _run("occlusion", model, x, window=4, stride=4, batch_size=16)
    flaky = _OomAbove(model, limit=5)
    attr, details, _ = _run("occlusion", flaky, x, window=4, stride=4, batch_size=16)
    torch.testing.assert_close(attr, reference, rtol=1e-6, atol=1e-7)
    assert details["batch_size"] == 4 and details["out_of_memory_backoffs"] == 2
    assert flaky.failures == 2


def test_out_of_memory_on_a_single_sample_is_a_method_error(x):
    with pytest.raises(MethodError, match="does not fit in memory"):
        _run("occlusion", _OomAbove(_cnn(), limit=0), x, window=8, stride=8, batch_size=2)


def test_other_errors_are_not_retried(x):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    evaluator = Evaluator(Broken(), 0, 8)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        evaluator.scores(4, lambda s, e: x.expand(e - s, *x.shape[1:]))
    assert evaluator.backoffs == 0


def test_progress_reports_done_total_and_an_eta(x):
    lines: list[str] = []
    _run("feature_ablation", _cnn(), x, batch_size=3, progress=lines.append)
    assert lines and lines[-1].startswith("feature_ablation: 8/8 perturbations, ETA 0 s")
    meter = ProgressMeter("occlusion", 10, lines.append, every_s=0.0)
    meter.advance(5)
    assert lines[-1].startswith("occlusion: 5/10 perturbations, ETA")


def test_slic_supervoxels_follow_the_image_and_the_spacing(x):
    # Two flat halves: supervoxels never straddle the edge between them.
    image = torch.zeros(1, 1, *SHAPE)
    image[..., 8:] = 10.0
    _, details, _ = _run(
        "feature_ablation", _cnn(), image, grouping={"kind": "slic", "segments": 8}
    )
    from xaimed.methods.groupings import slic_labels

    labels = slic_labels(image[0].numpy(), 8, 0.1, (1.0, 1.0, 1.0))
    for g in np.unique(labels):
        side = image[0, 0].numpy()[labels == g]
        assert side.min() == side.max()
    assert details["grouping"]["groups"] == len(np.unique(labels)) >= 2
    # The spacing enters the distance SLIC minimises: a coarse axis changes the supervoxels.
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(np.random.default_rng(0).random(SHAPE), 2)[None]
    iso = slic_labels(smooth, 8, 0.1, (1.0, 1.0, 1.0))
    aniso = slic_labels(smooth, 8, 0.1, (1.0, 1.0, 4.0))
    assert (iso != aniso).mean() > 0.1


def _case(tmp_path, array: np.ndarray, labels: np.ndarray | None = None) -> CaseFiles:
    import nibabel as nib

    from xaimed.io.nifti import read_nifti

    affine = oblique_affine(spacing=(2.0, 2.0, 3.0))
    path = tmp_path / "caseA.nii.gz"
    nib.save(nib.Nifti1Image(array.astype(np.float32), affine), str(path))
    if labels is not None:
        nib.save(
            nib.Nifti1Image(labels.astype(np.int16), affine), str(tmp_path / "caseA_lab.nii.gz")
        )
        nib.save(
            nib.Nifti1Image((array * 0).astype(np.float32), affine),
            str(tmp_path / "ref_caseA.nii.gz"),
        )
    section = PreprocessingSection.model_validate(
        {"reorient": "RAS", "resample": {"spacing": [2.0, 2.0, 2.0]}}
    )
    prepared = prepare(read_nifti(path), section)
    return CaseFiles("caseA", prepared, section, base_dir=tmp_path)


def test_label_map_grouping_follows_the_case_onto_the_model_grid(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(size=(12, 10, 8))
    labels = np.zeros((12, 10, 8), dtype=int)
    labels[:6] = 7
    labels[6:, :5] = 3
    case = _case(tmp_path, array, labels)
    x = torch.from_numpy(case.prepared.array)[None]
    model = _Weighted(torch.ones(1, *x.shape[1:]))
    attr, details, count = _run(
        "feature_ablation",
        model,
        x,
        target=0,
        case=case,
        grouping={"kind": "labels", "path": "{case_id}_lab.nii.gz"},
        baseline=0.0,
    )
    assert details["grouping"]["label_values"] == [0, 3, 7] and count.forward == 4
    on_grid = case.prepared.forward_labels(labels)
    for g in (0, 3, 7):  # ablating a region removes exactly its sum, painted on its voxels
        region = on_grid == g
        expected = float(x[0, 0][torch.from_numpy(region)].sum())
        values = attr[0, 0][torch.from_numpy(region)]
        assert float(values.min()) == pytest.approx(expected, rel=1e-5)
        assert float(values.max()) == pytest.approx(expected, rel=1e-5)


def test_reference_and_blur_baselines(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(size=(12, 10, 8)) + 5
    case = _case(tmp_path, array, np.zeros((12, 10, 8)))
    x = torch.from_numpy(case.prepared.array)[None]
    model = _Weighted(torch.ones(1, *x.shape[1:]))
    ref = {"kind": "reference", "path": "ref_{case_id}.nii.gz"}
    attr, details, _ = _run(
        "occlusion", model, x, target=0, case=case, window=4, stride=4, baseline=ref
    )
    # The reference is all zeros: with non-overlapping windows (clipped at the border) every
    # voxel loses exactly the sum of x over its own window.
    expected = torch.zeros_like(x[0, 0])
    n0, n1, n2 = x.shape[2:]
    for i in range(0, n0, 4):
        for j in range(0, n1, 4):
            for k in range(0, n2, 4):
                box = (slice(i, i + 4), slice(j, j + 4), slice(k, k + 4))
                expected[box] = x[0, 0][box].sum()
    torch.testing.assert_close(attr[0, 0], expected, rtol=1e-5, atol=1e-5)
    assert details["baseline"] == ref
    blur, _, _ = _run(
        "occlusion", model, x, target=0, case=case, window=64, stride=64,
        baseline={"kind": "blur", "sigma_mm": 4.0},
    )  # fmt: skip
    # Blurring keeps the mean away from the border, so one window over everything loses little.
    assert float(blur.abs().max()) < 0.1 * float(x.sum())
    with pytest.raises(
        InputError, match=r"case caseA: baseline.path file .*nope.nii does not exist"
    ):
        _run(
            "occlusion",
            model,
            x,
            target=0,
            case=case,
            baseline={"kind": "reference", "path": "nope.nii"},
        )


def test_occlusion_agrees_with_monai_where_definitions_coincide(x):
    # MONAI's OcclusionSensitivity averages the occluded *score* over every window covering a
    # voxel (windows of mask_size every mask_size * (1 - overlap) voxels); xaimed averages the
    # score *drop*. With a constant fill and windows that tile the volume exactly (no shifted
    # last window), occlusion = f(x) - MONAI's map.
    monai = pytest.importorskip("monai.visualize")
    x = x[..., :12, :12, :12].double()  # 5^3 windows: MONAI occludes them one by one
    model = _Centred(_cnn(), x)
    ours, _, _ = _run("occlusion", model, x, window=4, stride=2, baseline=0.25)
    occ = monai.OcclusionSensitivity(
        model, mask_size=4, n_batch=8, mode=0.25, overlap=0.5, activate=False
    )
    theirs, _ = occ(x)
    with torch.no_grad():
        reference = model(x)[0, 1]
    _close(ours[0, 0], reference - theirs[0, 1].as_tensor())
