"""Gradient-family runners against closed forms, invariances and refusals."""

from __future__ import annotations

import pytest
import torch
from conftest import run_method
from tiny_models import FunctionalReLU, LinearModel, TinyCNN

from xaimed.engine.batching import bytes_per_sample, choose_batch_size
from xaimed.errors import MethodError
from xaimed.methods import registry

SHAPE = (8, 8, 8)


def _linear() -> LinearModel:
    torch.manual_seed(0)
    model = LinearModel(SHAPE)
    with torch.no_grad():
        model.weight.normal_()
    return model.eval()


def _run(name, model, x, *, target=1, batch_size=4, seed=0, is_script=False, **params):
    attribution, _, count = run_method(
        name, model, x, context={"is_script": is_script}, target=target,
        batch_size=batch_size, seed=seed, **params,
    )  # fmt: skip
    return attribution, count


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(1, 1, *SHAPE, generator=torch.Generator().manual_seed(1))


def test_saliency_is_the_signed_weight_of_a_linear_model(x):
    model = _linear()
    attr, count = _run("saliency", model, x)
    torch.testing.assert_close(attr[0, 0], model.weight[1].detach())
    assert attr.min() < 0  # signed: no silent abs
    assert (count.forward, count.backward) == (1, 1)


def test_input_x_gradient_and_integrated_gradients_are_x_times_w_for_linear(x):
    model = _linear()
    expected = x[0, 0] * model.weight[1].detach()
    attr, _ = _run("input_x_gradient", model, x)
    torch.testing.assert_close(attr[0, 0], expected)
    attr, count = _run("integrated_gradients", model, x, steps=10, baseline="zero")
    torch.testing.assert_close(attr[0, 0], expected, rtol=1e-5, atol=1e-6)
    assert count.forward == 10 and count.backward == 10


def test_integrated_gradients_completeness_on_a_cnn(x):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    attr, _ = _run("integrated_gradients", model, x, steps=200, baseline="min")
    baseline = torch.full_like(x, float(x.min()))
    with torch.no_grad():
        delta = model(x)[0, 1] - model(baseline)[0, 1]
    assert float(attr.sum()) == pytest.approx(float(delta), rel=1e-3, abs=1e-5)


def test_internal_batch_size_does_not_change_results(x):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    ig1, c1 = _run("integrated_gradients", model, x, steps=12, batch_size=1)
    ig7, c7 = _run("integrated_gradients", model, x, steps=12, batch_size=7)
    torch.testing.assert_close(ig1, ig7, rtol=1e-5, atol=1e-7)
    assert (c1.forward_calls, c7.forward_calls) == (12, 2)
    sg1, _ = _run("smoothgrad", model, x, samples=6, batch_size=1)
    sg6, _ = _run("smoothgrad", model, x, samples=6, batch_size=6)
    torch.testing.assert_close(sg1, sg6, rtol=1e-5, atol=1e-7)


def test_smoothgrad_and_vargrad_on_linear(x):
    model = _linear()
    sg, count = _run("smoothgrad", model, x, samples=5)
    torch.testing.assert_close(sg[0, 0], model.weight[1].detach(), rtol=1e-5, atol=1e-6)
    assert count.forward == 5
    vg, _ = _run("vargrad", model, x, samples=5)
    assert float(vg.abs().max()) < 1e-5  # the gradient of a linear model never varies


def test_seeded_methods_repeat_exactly_and_depend_on_the_seed(x):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    a, _ = _run("gradient_shap", model, x, samples=6, seed=3)
    b, _ = _run("gradient_shap", model, x, samples=6, seed=3)
    c, _ = _run("gradient_shap", model, x, samples=6, seed=4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_gradient_shap_is_x_minus_baseline_times_w_for_linear(x):
    model = _linear()
    attr, count = _run("gradient_shap", model, x, samples=9, noise=0.0, baselines=["zero"])
    torch.testing.assert_close(attr[0, 0], x[0, 0] * model.weight[1].detach(), rtol=1e-5, atol=1e-6)
    assert count.forward == 9 and count.forward_calls == 3  # batches of 4, 4, 1


def test_deeplift_on_linear_equals_x_minus_baseline_times_w(x):
    model = torch.nn.Sequential(torch.nn.ReLU(), _linear())  # a ReLU module so DeepLift applies
    xp = x.abs()
    attr, _ = _run("deeplift", model, xp, baseline="zero")
    torch.testing.assert_close(
        attr[0, 0], xp[0, 0] * model[1].weight[1].detach(), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("integrated_gradients", {"steps": 4, "baseline": {"kind": "blur", "sigma_mm": 2.0}}),
        (
            "gradient_shap",
            {"samples": 3, "noise": 0.0, "baselines": [{"kind": "blur", "sigma_mm": 2.0}]},
        ),
    ],
)
def test_gradient_methods_take_a_blurred_baseline(name, params, x):
    # Linear model: the attribution is (x - baseline) * w, the baseline being x blurred with
    # sigma 2 mm (2 voxels: without a case the grid is taken as 1 mm).
    from scipy import ndimage

    model = _linear()
    attr, _ = _run(name, model, x, **params)
    blurred = ndimage.gaussian_filter(x[0, 0].numpy(), 2.0, mode="nearest")
    expected = (x[0, 0] - torch.from_numpy(blurred)) * model.weight[1].detach()
    torch.testing.assert_close(attr[0, 0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["guided_backprop", "deconvolution", "deeplift"])
def test_hook_methods_leave_no_hook_behind(name, x):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    _run(name, model, x)
    for module in model.modules():
        assert not module._forward_hooks and not module._backward_hooks
        assert not module._forward_pre_hooks


def test_guided_backprop_refuses_functional_relu_and_torchscript(x):
    with pytest.raises(MethodError, match=r"no torch\.nn\.ReLU module"):
        _run("guided_backprop", FunctionalReLU().eval(), x)
    with pytest.raises(MethodError, match="TorchScript"):
        _run("deconvolution", TinyCNN().eval(), x, is_script=True)


class _GatedSum(torch.nn.Module):
    """Conv 1^3 with weights (1, -1) -> ReLU -> sum over voxels -> linear: channel 0 is active
    where x > 0, channel 1 where x < 0, and class 1 weighs them 2 and -3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, kernel_size=1)
        self.relu = torch.nn.ReLU()
        self.fc = torch.nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1, 1))
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, -3.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).flatten(2).sum(-1))


def test_guided_backprop_keeps_only_positive_signals_through_relus(x):
    # The plain gradient is 2 where x > 0 and (-3) * (-1) = 3 where x < 0; guided backprop drops
    # the negative signal (-3) reaching the ReLU of channel 1, so only channel 0's 2 remains.
    model = _GatedSum().eval()
    guided, _ = _run("guided_backprop", model, x)
    plain, _ = _run("saliency", model, x)
    torch.testing.assert_close(guided[0, 0], 2.0 * (x[0, 0] > 0).float())
    torch.testing.assert_close(plain[0, 0], torch.where(x[0, 0] > 0, 2.0, 3.0))


class _Boom(torch.autograd.Function):
    """Identity forward, failing backward: a method fails with its hooks in place."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom in backward")


class _Failing(TinyCNN):
    def __init__(self, phase: str) -> None:
        super().__init__()
        self.phase = phase

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)  # every layer ran: forward hooks have fired
        if self.phase == "forward":
            raise RuntimeError("boom in forward")
        return _Boom.apply(out)


# Every method that installs hooks, failing in the forward and in the backward pass (the CAMs
# that take no gradient run no backward pass: a failing backward cannot reach them).
GRADIENT_FREE = {"cam", "score_cam", "ablation_cam", "eigen_cam"}
HOOK_FAILURES = [
    (info.name, phase)
    for info in registry.all_methods()
    if info.needs_module
    for phase in ("forward", "backward")
    if not (info.name in GRADIENT_FREE and phase == "backward")
]


@pytest.mark.parametrize(("name", "phase"), HOOK_FAILURES)
def test_hook_methods_leave_no_hook_behind_when_they_fail(name, phase, x):
    torch.manual_seed(0)
    model = _Failing(phase).eval()
    with pytest.raises(RuntimeError, match=f"boom in {phase}"):
        _run(name, model, x)
    for label, module in model.named_modules():
        hooks = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks,
                 module._backward_pre_hooks)  # fmt: skip
        assert not any(hooks), f"{name} left a hook on {label or 'the model'}"


def test_batch_size_from_memory_budget(x):
    model = TinyCNN().eval()
    per_sample = bytes_per_sample(model, x)
    # At least the input, its gradient and the conv output saved for backward.
    assert per_sample >= x.numel() * 4 * (4 + 1)
    assert choose_batch_size(model, x, budget=per_sample * 3 + 1, fixed=None) == 3
    assert choose_batch_size(model, x, budget=1, fixed=None) == 1
    assert choose_batch_size(model, x, budget=1, fixed=9) == 9


def test_every_method_has_a_cost_and_a_family():
    for info in registry.all_methods():
        assert info.family in {"gradient", "decomposition", "cam", "perturbation"}
        assert "fwd" in info.cost(info.params_model())
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(registry.find("saliency"))


def test_gradient_baseline_defaults_are_the_measured_ones_and_dump_for_the_sidecar():
    # benchmarks/baselines.py chose these; the sidecar records params.model_dump(mode="json").
    blur = {"kind": "blur", "sigma_mm": 8.0}
    for name in ("integrated_gradients", "deeplift"):
        params = registry.find(name).params_model.model_validate({})
        assert params.model_dump(mode="json")["baseline"] == blur
    shap = registry.find("gradient_shap").params_model.model_validate({})
    assert shap.model_dump(mode="json")["baselines"] == ["zero"]
