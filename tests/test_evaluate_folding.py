"""Frozen batch norms folded into their convolutions: the same function and maps, a copy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ROOT
from tiny_models import TinyCNN

from xaimed.config import load_config, updated
from xaimed.evaluate import sanity
from xaimed.evaluate.folding import fold_batch_norms, fold_safe, foldable_pairs
from xaimed.sample.network import SampleCNN


def _trained_like() -> SampleCNN:
    torch.manual_seed(3)
    model = SampleCNN(width=4)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.3, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_folded_copy_has_the_same_outputs_and_input_gradients():
    model = _trained_like()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batch_norms(model)
    assert foldable_pairs(model) == [
        ("block1.0", "block1.1"), ("block2.0", "block2.1"), ("block3.0", "block3.1"),
    ]  # fmt: skip
    assert isinstance(folded.block2[1], torch.nn.Identity)
    assert isinstance(model.block2[1], torch.nn.BatchNorm3d)  # the original is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.randn(2, 1, 16, 16, 16, requires_grad=True)
    out = model(x)
    (grad,) = torch.autograd.grad(out[:, 1].sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    out2 = folded(x2)
    (grad2,) = torch.autograd.grad(out2[:, 1].sum(), x2)
    np.testing.assert_allclose(out2.detach(), out.detach(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad2, grad, rtol=1e-4, atol=1e-7)
    # Batch norm changes the function: the check above would fail without folding it.
    assert not torch.allclose(model.block1[0](x.detach()), folded.block1[0](x.detach()))


def test_randomised_cascade_copies_fold_to_the_same_function():
    model = _trained_like()
    x = torch.randn(1, 1, 16, 16, 16)
    for _, randomised in sanity.randomised_cascade(model, seed=0):
        with torch.no_grad():
            np.testing.assert_allclose(
                fold_batch_norms(randomised)(x), randomised(x), rtol=1e-5, atol=1e-6
            )


def test_channels_last_weights_stay_channels_last():
    model = _trained_like().to(memory_format=torch.channels_last_3d)  # as evaluate loads it
    folded = fold_batch_norms(model)
    assert folded.block2[0].weight.is_contiguous(memory_format=torch.channels_last_3d)


def test_nothing_to_fold_gives_the_network_itself():
    model = TinyCNN().eval()  # its batch norm is called in forward, not chained in a Sequential
    assert foldable_pairs(model) == []
    assert fold_batch_norms(model) is model


def test_training_mode_norms_are_not_folded():
    model = _trained_like().train()
    assert foldable_pairs(model) == []


@pytest.mark.parametrize(
    ("params", "name", "safe"),
    [
        ({}, "integrated_gradients", True),
        ({}, "guided_backprop", True),
        ({}, "grad_cam", True),  # auto: the last ReLU, same output folded or not
        ({"layer": "block3.1"}, "grad_cam", True),  # a folded norm's output is kept
        ({"layer": "block3.0"}, "grad_cam", False),  # a folded convolution's is not
        ({}, "lrp", False),  # rules per layer
        ({}, "deeplift", False),
    ],
)
def test_which_methods_run_on_the_folded_model(params, name, safe):
    config = updated(
        load_config(ROOT / "configs" / "sample.yaml"),
        {"methods": [{"name": name, "params": params}]},
    )
    assert fold_safe(config.methods[0], _trained_like()) is safe
