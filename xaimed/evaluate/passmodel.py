"""The copy of a model that evaluate runs its passes on: the same function, computed faster.

Two rewrites, each the same function up to float rounding: frozen batch norms folded into the
convolutions before them (:mod:`xaimed.evaluate.folding`), and a single-channel input
convolution whose input gradient is one depthwise convolution
(:mod:`xaimed.evaluate.inputconv`). The loaded model, which maps are checked against, is never
touched; methods that apply rules per layer run on it (see :func:`fold_safe`).
"""

from __future__ import annotations

import copy

from torch import nn

from xaimed.evaluate.folding import fold_batch_norms
from xaimed.evaluate.inputconv import swap_input_convolutions, swappable


def pass_model(network: nn.Module) -> nn.Module:
    """A copy of ``network`` with its batch norms folded and its input convolution swapped;
    ``network`` itself when neither applies."""
    fast = fold_batch_norms(network)
    if fast is network:
        if not any(swappable(m) for m in network.modules()):
            return network
        fast = copy.deepcopy(network)
    swap_input_convolutions(fast)
    return fast
