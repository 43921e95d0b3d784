"""The single-channel input convolution with a depthwise input gradient: the same outputs
exactly, the same input gradients to float rounding, only where it applies."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny_models import TinyCNN
from torch import nn

from xaimed.evaluate.inputconv import InputConv3d, swap_input_convolutions, swappable
from xaimed.evaluate.passmodel import pass_model
from xaimed.sample.network import SampleCNN


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


@pytest.mark.parametrize(
    ("kernel", "padding", "dilation", "bias"),
    [(3, 1, 1, True), (3, 0, 1, False), (5, 2, 1, True), (3, 2, 2, True), (3, (0, 1, 2), 1, True)],
)
def test_input_gradient_equals_the_convolutions(kernel, padding, dilation, bias):
    torch.manual_seed(0)
    conv = _frozen(nn.Conv3d(1, 6, kernel, padding=padding, dilation=dilation, bias=bias))
    fast = copy.deepcopy(conv)
    fast.__class__ = InputConv3d
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        x = torch.randn(3, 1, 11, 9, 10).contiguous(memory_format=layout).requires_grad_(True)
        out = conv(x)
        upstream = torch.randn_like(out)
        (want,) = torch.autograd.grad(out, x, upstream)
        x2 = x.detach().clone().requires_grad_(True)
        out2 = fast(x2)
        (got,) = torch.autograd.grad(out2, x2, upstream)
        assert torch.equal(out2, out)  # the forward pass is the same call
        assert got.shape == x.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_input_gradient_under_autocast_has_the_input_dtype(dtype):
    """runtime.precision bf16/fp16: the forward runs under autocast, its gradient arrives in
    the low precision while the weights stay float32 (backward runs outside autocast)."""
    from xaimed.engine.counting import CountingModel

    torch.manual_seed(0)
    net = _frozen(nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1)))
    x = torch.randn(2, 1, 8, 8, 8)
    grads = []
    fast = copy.deepcopy(net)
    assert swap_input_convolutions(fast) == ["0"]
    for model in (net, fast):
        counted = CountingModel(model, autocast_dtype=dtype)
        xi = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(counted(xi).float().sum(), xi)
        assert grad.dtype == torch.float32
        grads.append(grad)
    np.testing.assert_allclose(grads[1], grads[0], rtol=0.05, atol=0.05)


def test_only_plain_frozen_single_channel_convolutions_are_swapped():
    assert swappable(nn.Conv3d(1, 4, 3, padding=1))
    assert not swappable(nn.Conv3d(2, 4, 3, padding=1))  # several input channels
    assert not swappable(nn.Conv3d(1, 4, 3, stride=2))
    assert not swappable(nn.Conv3d(1, 4, 3, padding="same"))
    assert not swappable(nn.Conv3d(1, 4, 3, padding=1, padding_mode="reflect"))
    assert not swappable(nn.Conv3d(1, 4, 3, padding=3))  # larger than the kernel's reach
    assert not swappable(nn.Conv2d(1, 4, 3, padding=1))
    # A convolution whose weights need gradients (training) keeps PyTorch's own backward.
    trainable = nn.Conv3d(1, 4, 3, padding=1)
    swap_input_convolutions(nn.Sequential(trainable))
    x = torch.randn(1, 1, 6, 6, 6)
    trainable(x).sum().backward()
    assert trainable.weight.grad is not None


def test_pass_model_is_a_copy_with_the_same_function():
    torch.manual_seed(1)
    model = _frozen(SampleCNN(width=4)).to(memory_format=torch.channels_last_3d)
    fast = pass_model(model)
    assert type(fast.block1[0]) is InputConv3d
    assert type(model.block1[0]) is nn.Conv3d  # the original is untouched
    x = torch.randn(2, 1, 16, 16, 16, requires_grad=True)
    (want,) = torch.autograd.grad(model(x)[:, 1].sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    (got,) = torch.autograd.grad(fast(x2)[:, 1].sum(), x2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    # Without batch norms to fold, the swap alone still makes a copy.
    tiny = _frozen(TinyCNN())
    swapped = pass_model(tiny)
    assert swapped is not tiny and type(swapped.conv) is InputConv3d
    # Nothing to rewrite: the network itself.
    plain = _frozen(nn.Sequential(nn.Conv3d(2, 2, 3), nn.ReLU()))
    assert pass_model(plain) is plain
