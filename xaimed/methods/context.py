"""What a method runner receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from xaimed.methods.casefiles import CaseFiles


@dataclass(frozen=True)
class MethodContext:
    """The model, one preprocessed input and the explained output, ready for a runner.

    ``model`` returns one score per class; ``inputs`` has shape (1, C, I, J, K) on ``device``.
    ``batch_size`` bounds how many samples a runner sends through the model at once.
    ``network`` is the user's own module, where layers are looked up by name (``model`` may wrap
    it for pass counting or target reduction); None means ``model`` itself.
    """

    model: torch.nn.Module
    inputs: torch.Tensor
    target: int
    seed: int
    batch_size: int
    device: torch.device
    is_script: bool = False
    network: torch.nn.Module | None = None
    # The case behind ``inputs`` (per-case files, model-grid spacing); None outside a run.
    case: CaseFiles | None = None
    # Called with a progress line (done / total, ETA) by long-running runners.
    progress: Callable[[str], None] | None = None
    # 2: ``network`` is a 2D model, given ``inputs`` without their depth axis of 1 (``model``
    # takes ``inputs`` as they are); its feature maps are (N, C, h, w).
    spatial_dims: int = 3

    @property
    def network_inputs(self) -> torch.Tensor:
        """``inputs`` as ``network`` itself takes them (a 2D model: without the depth axis)."""
        return self.inputs[..., 0] if self.spatial_dims == 2 else self.inputs

    @property
    def user_network(self) -> torch.nn.Module:
        """The module whose named layers the config refers to."""
        return self.network if self.network is not None else self.model


@dataclass(frozen=True)
class MethodOutput:
    """A runner's result when it has more to say than the map.

    ``details`` goes into the sidecar under ``method_details`` (for example the layer a CAM was
    taken from and its native resolution). A runner may also return a bare tensor. An
    attribution with one channel for a multi-channel input is a spatial map (CAM methods): it
    is written as it is, not combined over channels.
    """

    attribution: torch.Tensor
    details: dict[str, Any] = field(default_factory=dict)
