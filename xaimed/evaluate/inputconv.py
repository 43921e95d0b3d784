"""A single-channel 3D input convolution whose input gradient is one depthwise convolution.

Gradient methods need the gradient with respect to the input, and for a first layer that
convolves one input channel into C output channels PyTorch computes it as a transposed
convolution from C channels to one, which oneDNN runs far below the speed of the forward pass:
in the profile of evaluate on the sample it was half the time of every forward and backward
pass (220 ms of a 32-volume batch, the forward convolution 43 ms). The same gradient is the sum
over the C channels of each channel's gradient correlated with its own flipped kernel: a
depthwise (grouped) convolution that oneDNN runs fast, and a channel sum: 100 ms against 947 ms
for the same 32-volume gradient measured side by side, and a whole forward and backward pass of
the sample model on 32 volumes 0.32 s CPU instead of 0.49 s.
The forward pass is untouched (the same ``conv3d`` call), so outputs, layer activations and
hooks are exactly those of the original layer; the input gradient differs by float rounding only
(another summation order). PyTorch has no switch for this, hence the hand-written backward.

Only plain cases are swapped: one input channel, no groups, stride 1, zero padding given as
numbers, parameters frozen (evaluate's models never train).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _InputConv3d(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        padding: tuple[int, int, int],
        dilation: tuple[int, int, int],
    ) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.padding, ctx.dilation = padding, dilation
        ctx.input_dtype = x.dtype
        return F.conv3d(x, weight, bias, 1, padding, dilation)

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        (weight,) = ctx.saved_tensors
        # A stride-1 convolution's transpose is the convolution with the flipped kernel and the
        # complementary padding d * (k - 1) - p, which gives back the input's size.
        pad = [
            d * (k - 1) - p
            for k, p, d in zip(weight.shape[2:], ctx.padding, ctx.dilation, strict=True)
        ]
        # Under autocast (runtime.precision bf16/fp16) the forward ran in the low precision and
        # its gradient arrives in it, while backward runs outside autocast: the kernel follows
        # the gradient's dtype, and the input's gradient is given in the input's dtype.
        flipped = weight.flip(2, 3, 4).to(grad.dtype)  # (C, 1, k, k, k): one per output channel
        per_channel = F.conv3d(grad, flipped, None, 1, pad, ctx.dilation, groups=weight.shape[0])
        grad_input = per_channel.sum(1, keepdim=True).to(ctx.input_dtype)
        return grad_input, None, None, None, None


class InputConv3d(nn.Conv3d):
    """``nn.Conv3d`` with one input channel whose input gradient is computed as a depthwise
    convolution (see the module's docstring); the forward pass is the parent's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution; through the fast backward unless its parameters need gradients."""
        frozen = not self.weight.requires_grad and (
            self.bias is None or not self.bias.requires_grad
        )
        if not frozen:
            return super().forward(x)
        return _InputConv3d.apply(x, self.weight, self.bias, self.padding, self.dilation)


def swappable(conv: nn.Module) -> bool:
    """Whether ``conv`` is a plain single-channel ``nn.Conv3d`` :class:`InputConv3d` can replace."""
    if type(conv) is not nn.Conv3d:
        return False
    padding = conv.padding
    return (
        conv.in_channels == 1
        and conv.groups == 1
        and tuple(conv.stride) == (1, 1, 1)
        and conv.padding_mode == "zeros"
        and not isinstance(padding, str)
        and all(
            0 <= p <= d * (k - 1)
            for p, d, k in zip(padding, conv.dilation, conv.kernel_size, strict=True)
        )
    )


def swap_input_convolutions(network: nn.Module) -> list[str]:
    """Turn, in place, every swappable convolution of ``network`` into an :class:`InputConv3d`
    (the same object, parameters, hooks and name: only its class changes, which adds no state);
    the names swapped. Use it on a copy: the network's own input gradients change rounding."""
    names = [name for name, module in network.named_modules() if name and swappable(module)]
    for name in names:
        network.get_submodule(name).__class__ = InputConv3d
    return names
