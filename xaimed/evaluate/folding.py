"""Frozen batch norms folded into the convolutions before them, for evaluate's model passes.

In eval mode a batch norm is a fixed per-channel affine map, so ``bn(conv(x))`` equals one
convolution with rescaled weights and a shifted bias (PyTorch's
``torch.nn.utils.fusion.fuse_conv_bn_eval``): the same function, computed in one pass instead of
two (the profile of evaluate on the sample had batch norm at a fifth of its time, forward and
backward). Values differ from the unfolded model's only by float rounding.

The folded model is always a copy (the loaded model, which maps are checked against, is never
touched), made after any randomisation, so the cascade folds the randomised weights. A method
whose result depends on more than the model's function is run on the original: LRP and DeepLift
apply rules per layer, and a layer method given a convolution by name would read that
convolution's output, which folding changes.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from xaimed.config import MethodEntry

# Methods that see only the model's function (its outputs and input gradients, with hooks on
# activations at most): folding cannot change their maps beyond rounding.
_FUNCTION_ONLY = frozenset({
    "saliency", "gradient", "integrated_gradients", "smoothgrad", "vargrad", "gradient_shap",
    "input_x_gradient", "guided_backprop", "deconvolution", "occlusion", "feature_ablation",
    "perturbation", "shapley_sampling", "kernel_shap", "lime",
})  # fmt: skip
# Layer methods: safe unless their layer is a folded convolution (its output changes; a folded
# batch norm becomes an identity with the same output, so naming one stays exact).
_LAYER_METHODS = frozenset({
    "cam", "grad_cam", "grad_cam_pp", "guided_grad_cam", "hires_cam", "layer_cam",
    "xgrad_cam", "eigen_cam", "score_cam", "ablation_cam",
})  # fmt: skip
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def foldable_pairs(network: nn.Module) -> list[tuple[str, str]]:
    """(convolution, batch norm) module names where the norm directly follows the convolution
    in a plain ``nn.Sequential`` and is frozen (eval mode, running statistics)."""
    pairs = []
    for name, parent in network.named_modules():
        # A Sequential subclass with its own forward may not chain its children in order.
        plain = isinstance(parent, nn.Sequential) and type(parent).forward is nn.Sequential.forward
        if not plain:
            continue
        children = list(parent.named_children())
        for (conv_name, conv), (norm_name, norm) in itertools.pairwise(children):
            if (
                type(conv) in _CONV
                and type(norm) in _NORM
                and not conv.training
                and not norm.training
                and norm.running_mean is not None
                and norm.running_var is not None
                and norm.num_features == conv.out_channels
            ):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + conv_name, prefix + norm_name))
    return pairs


def fold_batch_norms(network: nn.Module) -> nn.Module:
    """A copy of ``network`` with every foldable batch norm folded into its convolution and
    replaced by ``nn.Identity`` (module names and hooks on other layers stay as they were);
    the copy keeps the network's memory format. With nothing to fold, ``network`` itself."""
    if not foldable_pairs(network):
        return network
    folded = copy.deepcopy(network)
    modules = dict(folded.named_modules())
    for conv_name, norm_name in foldable_pairs(folded):
        conv = modules[conv_name]
        fused = fuse_conv_bn_eval(conv, modules[norm_name])  # type: ignore[arg-type]
        with torch.no_grad():
            # Same layout as the original weights (channels-last stays channels-last).
            fused.weight.data = fused.weight.data.contiguous(memory_format=_format(conv.weight))
        _replace(folded, conv_name, fused)
        _replace(folded, norm_name, nn.Identity())
    return folded


def fold_safe(entry: MethodEntry, network: nn.Module) -> bool:
    """Whether ``entry``'s maps on the folded ``network`` equal its maps on ``network``."""
    if entry.name in _FUNCTION_ONLY:
        return True
    if entry.name in _LAYER_METHODS:
        settings = entry.settings
        layers = getattr(settings, "layers", None) or [getattr(settings, "layer", "auto")]
        convs = {conv for conv, _ in foldable_pairs(network)}
        return all(isinstance(layer, str) and layer not in convs for layer in layers)
    return False


def _format(weight: torch.Tensor) -> torch.memory_format:
    if weight.dim() == 5 and weight.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    if weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)
