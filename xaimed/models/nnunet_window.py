"""nnU-Net's sliding-window inference as a differentiable module.

nnU-Net's predictor runs its sliding window under ``torch.inference_mode``, so no gradient can
pass through it; this module repeats the same arithmetic with plain tensor operations instead.
Where nnU-Net has a function for a piece, it is called: the patch starts
(``compute_steps_for_sliding_window``) and the Gaussian importance weights (``compute_gaussian``,
the very float16 weights the predictor uses). What is written here is only the loop: pad to the
patch size with zeros as ``pad_nd_image`` does, add each patch's logits times the weights,
divide by the summed weights, crop the padding, and optionally average over mirrored inputs
(test-time augmentation) per patch as the predictor does.

Precision: without gradients (the prediction, perturbation methods) the sums are float16 with
the predictor's exact order of operations, so the prediction is nnU-Net's bit for bit; the
result is float16 when ``float16_result`` is set (ensemble members, whose mean nnU-Net also takes
in float16; :class:`~xaimed.models.ensemble.EnsembleModule` returns it as float32), else float32.
With gradients the sums are float32, since float16 would round gradients away; values then
agree with the prediction to float16 precision.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F


class NnunetWindow(torch.nn.Module):
    """One nnU-Net network over a whole preprocessed volume, (N, C, X, Y, Z) -> logits."""

    def __init__(
        self,
        network: torch.nn.Module,
        patch_size: tuple[int, ...],
        *,
        step_size: float = 0.5,
        mirror_axes: tuple[int, ...] | None = None,
        float16_result: bool = False,
    ) -> None:
        super().__init__()
        self.network = network
        self.patch_size = tuple(int(p) for p in patch_size)
        self.step_size = step_size
        self.mirror_axes = tuple(mirror_axes) if mirror_axes else None
        self.float16_result = float16_result

    def sidecar_fields(self) -> dict[str, Any]:
        """For sidecars."""
        return {
            "patch_size": list(self.patch_size),
            "step_size": self.step_size,
            "blend": "gaussian (nnU-Net's compute_gaussian, sigma 1/8 of the patch)",
            "mirror_axes": list(self.mirror_axes) if self.mirror_axes else None,
        }

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        prediction = self.network(x)
        if self.mirror_axes is None:
            return prediction
        axes = [a + 2 for a in self.mirror_axes]
        combos = [c for n in range(len(axes)) for c in itertools.combinations(axes, n + 1)]
        for dims in combos:
            prediction = prediction + torch.flip(self.network(torch.flip(x, dims)), dims)
        return prediction / (len(combos) + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from nnunetv2.inference.sliding_window_prediction import (
            compute_gaussian,
            compute_steps_for_sliding_window,
        )

        shape = tuple(int(n) for n in x.shape[2:])
        # pad_nd_image: too-small axes are padded with zeros, the smaller half before.
        extra = [max(0, p - n) for p, n in zip(self.patch_size, shape, strict=True)]
        before = [e // 2 for e in extra]
        pad: list[int] = []
        for b, e in zip(reversed(before), reversed(extra), strict=True):
            pad += [b, e - b]
        padded = F.pad(x, pad) if any(extra) else x
        size = tuple(int(n) for n in padded.shape[2:])
        steps = compute_steps_for_sliding_window(size, self.patch_size, self.step_size)
        gaussian = compute_gaussian(
            self.patch_size, sigma_scale=1.0 / 8, value_scaling_factor=10,
            dtype=torch.float16, device=torch.device("cpu"),
        ).to(device=x.device)  # fmt: skip
        # The predictor's float16 sums without gradients; float32 with them (see module doc).
        dtype = torch.float32 if torch.is_grad_enabled() else torch.float16
        gaussian = gaussian.to(dtype)
        total: torch.Tensor | None = None
        weight = torch.zeros(size, device=x.device, dtype=dtype)
        for start in itertools.product(*steps):
            box = tuple(slice(s, s + p) for s, p in zip(start, self.patch_size, strict=True))
            out = self._predict(padded[(slice(None), slice(None), *box)])
            if total is None:
                total = out.new_zeros((out.shape[0], out.shape[1], *size), dtype=dtype)
            total[(slice(None), slice(None), *box)] += out * gaussian
            weight[box] += gaussian
        if total is None:  # there is always at least one patch
            raise RuntimeError("a sliding window without patches")
        logits = (total / weight)[(slice(None), slice(None), *crop_box(before, shape))]
        return logits if self.float16_result else logits.float()


def crop_box(before: list[int], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The unpadded part of a padded volume."""
    return tuple(slice(b, b + n) for b, n in zip(before, shape, strict=True))
