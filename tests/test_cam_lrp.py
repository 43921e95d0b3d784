"""CAM family and LRP: hand references, architecture checks, conservation, hook hygiene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import TinyCNN
from torch import nn

from xaimed.engine.counting import CountingModel
from xaimed.errors import MethodError
from xaimed.methods import registry
from xaimed.methods.context import MethodContext
from xaimed.methods.layers import feature_layer
from xaimed.sample.network import SampleCNN

SAMPLE_WEIGHTS = Path(__file__).parents[1] / "xaimed" / "sample" / "sample_cnn_state.pt"


def _ctx(model: nn.Module, x: torch.Tensor, target: int = 1) -> MethodContext:
    for p in model.parameters():
        p.requires_grad_(False)
    return MethodContext(
        model=CountingModel(model), inputs=x, target=target, seed=0, batch_size=4,
        device=x.device, network=model,
    )  # fmt: skip


def _run(name: str, ctx: MethodContext, **params):
    info = registry.find(name)
    return info.run(ctx, info.params_model.model_validate(params))


def _realistic_batch_norms(model: nn.Module, shape=(2, 1, 32, 32, 32)) -> nn.Module:
    """Random affine parameters and running statistics from train-mode passes, then eval."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.momentum = None
            if hasattr(m, "inplace"):
                m.inplace = False
        model.train()
        for _ in range(3):
            model(torch.randn(shape))
    return model.eval()


@pytest.fixture
def sample_cnn() -> SampleCNN:
    torch.manual_seed(0)
    return _realistic_batch_norms(SampleCNN())


def _x(shape=(24, 24, 24), seed=1) -> torch.Tensor:
    return torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(seed))


def test_grad_cam_equals_a_hand_computed_reference(sample_cnn):
    x = _x()
    out = _run("grad_cam", _ctx(sample_cnn, x), layer="block3.0")
    # By hand: activations of block3's conv, gradient of the class score, spatial mean, ReLU.
    m = sample_cnn
    with torch.enable_grad():
        a = m.block3[0](m.pool2(m.block2(m.pool1(m.block1(x))))).detach().requires_grad_()
        score = m.fc(m.gap(m.block3[2](m.block3[1](a))).flatten(1))[0, 1]
        (g,) = torch.autograd.grad(score, a)
    cam = F.relu((g.mean(dim=(2, 3, 4), keepdim=True) * a).sum(dim=1, keepdim=True))
    expected = F.interpolate(cam, size=(24, 24, 24), mode="trilinear", align_corners=False)
    torch.testing.assert_close(out.attribution, expected, rtol=1e-5, atol=1e-7)
    assert out.details["native_shape"] == [6, 6, 6] and out.details["relu"] is True
    assert out.attribution.shape == (1, 1, 24, 24, 24)


def test_upsampling_aligns_voxel_centres():
    # A layer voxel j covers input voxels [4j, 4j + 4): a map that is 1 in one layer voxel
    # peaks at the centre of those input voxels.
    from xaimed.methods.cam import to_input_grid

    ctx = _ctx(TinyCNN(), torch.zeros(1, 1, 16, 16, 16))
    native = torch.zeros(1, 4, 4, 4)
    native[0, 1, 2, 1] = 1.0
    up = to_input_grid(native, ctx)[0, 0]
    grid = torch.stack(torch.meshgrid(*[torch.arange(16.0)] * 3, indexing="ij"))
    centre = (grid * up).flatten(1).sum(1) / up.sum()
    # centres of input voxels 4..7, 8..11 and 4..7
    torch.testing.assert_close(centre, torch.tensor([5.5, 9.5, 5.5]))
    assert float(up.sum()) == pytest.approx(4**3)
    assert up[4:8, 8:12, 4:8].min() == pytest.approx(0.625**3) and up[:2].max() == 0


def test_cam_and_grad_cam_agree_for_gap_linear_models(sample_cnn):
    x = _x()
    ctx = _ctx(sample_cnn, x)
    cam = _run("cam", ctx).attribution.flatten()
    grad_cam = _run("grad_cam", ctx, relu=False).attribution.flatten()
    assert np.corrcoef(cam.numpy(), grad_cam.numpy())[0, 1] > 0.999
    scale = float(cam.abs().max())
    torch.testing.assert_close(cam, grad_cam * 6**3, rtol=1e-4, atol=1e-5 * scale)  # 1 / N
    # CAM's mean over the layer grid plus the bias is the class score.
    native = _run("cam", ctx).details["native_shape"]
    assert native == [6, 6, 6]
    relu_cam = _run("grad_cam", ctx).attribution.flatten()
    # The ReLU acts at layer resolution, before upsampling.
    assert relu_cam.min() >= 0
    # Interpolation weights are non-negative, so raising the native map raises the result.
    assert bool((relu_cam >= grad_cam - 1e-6 * scale).all())


class MaxPoolHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveMaxPool3d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def test_cam_refuses_models_without_an_average_pooling_linear_head():
    torch.manual_seed(0)
    ctx = _ctx(MaxPoolHead().eval(), _x((8, 8, 8)))
    with pytest.raises(MethodError, match=r"cam needs a model whose output is one linear layer"):
        _run("cam", ctx)
    assert _run("grad_cam", ctx).attribution.shape == (1, 1, 8, 8, 8)


def test_wrong_layer_name_lists_the_candidates(sample_cnn):
    with pytest.raises(MethodError, match=r"'block9' is not a module.*block1\.0, block2\.0"):
        _run("grad_cam", _ctx(sample_cnn, _x()), layer="block9")


def test_grad_cam_pp_is_positive_and_differs_from_grad_cam(sample_cnn):
    ctx = _ctx(sample_cnn, _x())
    pp = _run("grad_cam_pp", ctx).attribution
    gc = _run("grad_cam", ctx).attribution
    assert pp.min() >= 0 and pp.max() > 0
    assert not torch.allclose(pp / pp.max(), gc / gc.max())


def test_guided_grad_cam_is_guided_backprop_times_grad_cam(sample_cnn):
    ctx = _ctx(sample_cnn, _x())
    ggc = _run("guided_grad_cam", ctx).attribution
    gb = _run("guided_backprop", ctx)
    gc = _run("grad_cam", ctx).attribution
    torch.testing.assert_close(ggc, gb * gc)
    assert registry.find("guided_grad_cam").warning


def _monai_nets():
    monai = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    dense = monai.DenseNet(
        spatial_dims=3, in_channels=1, out_channels=2, init_features=8, growth_rate=4,
        block_config=(2, 2), bn_size=2,
    )  # fmt: skip
    res = monai.ResNet(
        block="basic", layers=[1, 1, 1, 1], block_inplanes=[4, 8, 8, 8], spatial_dims=3,
        n_input_channels=1, num_classes=2,
    )  # fmt: skip
    return dense, res


def test_auto_layer_on_monai_networks():
    dense, res = _monai_nets()
    x = _x((32, 32, 32))
    assert feature_layer(dense.eval(), x) == "class_layers.relu"
    assert feature_layer(res.eval(), x) == "layer4.0.act"  # reused ReLU: its last call
    out = _run("grad_cam", _ctx(res, x))
    assert out.details["layer"] == "layer4.0.act" and out.details["native_shape"] == [2, 2, 2]


@pytest.mark.parametrize("target", [0, 1])
def test_lrp_epsilon_conserves_relevance(sample_cnn, target):
    dense, res = _monai_nets()
    trained = SampleCNN().eval()
    trained.load_state_dict(torch.load(SAMPLE_WEIGHTS, weights_only=True))
    nets = {
        "sample (trained)": trained,
        "sample (random, realistic batch norms)": sample_cnn,
        "densenet": dense.eval(),
        "resnet": _realistic_batch_norms(res),
    }
    for name, net in nets.items():
        x = _x((32, 32, 32), seed=target)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        out = _run("lrp", _ctx(net, x, target), rule="epsilon", epsilon=1e-9)
        with torch.no_grad():
            logit = float(net(x)[0, target])
        relevance = float(out.attribution.sum())
        assert relevance == pytest.approx(logit, rel=0.01), name
        # the model is restored exactly and no hook is left
        after = net.state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before), name
        assert not any(isinstance(m, nn.Identity) for m in net.modules())
        for m in net.modules():
            assert not m._forward_hooks and not m._backward_hooks, name


def test_lrp_rules_differ_and_are_recorded(sample_cnn):
    ctx = _ctx(sample_cnn, _x())
    eps = _run("lrp", ctx)
    gamma = _run("lrp", ctx, rules={"conv": "gamma"}, gamma=0.5)
    ab = _run("lrp", ctx, rule="alpha_beta", alpha=2, beta=1)
    assert gamma.details["rules"] == {"conv": "gamma", "linear": "epsilon", "batchnorm": "epsilon"}
    assert eps.details["batch_norms_folded"] == [
        "block1.1 into block1.0", "block2.1 into block2.0", "block3.1 into block3.0",
    ]  # fmt: skip
    assert not torch.allclose(eps.attribution, gamma.attribution)
    assert not torch.allclose(eps.attribution, ab.attribution)
    with pytest.raises(ValueError, match="alpha - beta must be 1"):
        registry.find("lrp").params_model(rule="alpha_beta", alpha=2, beta=0.5)


class SigmoidInside(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        self.gate = nn.Sigmoid()
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gate(self.conv(x)).mean(dim=(2, 3, 4)))


class FunctionalTanh(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x)).mean(dim=(2, 3, 4)))


def test_lrp_refuses_unsupported_layers_by_name():
    x = _x((8, 8, 8))
    with pytest.raises(MethodError, match=r"no rule for the layer\(s\) gate \(Sigmoid\)"):
        _run("lrp", _ctx(SigmoidInside().eval(), x))
    with pytest.raises(MethodError, match=r"no rule for the operation\(s\) tanh"):
        _run("lrp", _ctx(FunctionalTanh().eval(), x))
    model = SigmoidInside().eval()
    with pytest.raises(MethodError):
        _run("lrp", _ctx(model, x))
    assert not any(m._forward_hooks for m in model.modules())


def test_cam_methods_refuse_torchscript(sample_cnn):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(sample_cnn)
    for name in ("grad_cam", "cam", "lrp"):
        with pytest.raises(MethodError, match="TorchScript"):
            _run(name, _ctx(scripted, _x()))
