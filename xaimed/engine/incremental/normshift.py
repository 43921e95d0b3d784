"""First-order correction for the statistics that frozen instance / group norms ignore.

With ``freeze_norm_statistics`` every per-sample norm applies the unoccluded pass's mean and
standard deviation, so a window's change stays in its box. The exact norm would also move each
channel's statistics a little, and with instance norm that shift reaches every voxel of the
map after it: on a large patch it sums to most of a window's effect. Per norm node ``l`` and
channel ``c`` the exact output is the frozen one with its normalised values scaled by
``1 + alpha`` and shifted by ``beta``::

    alpha = sigma / sigma' - 1        beta = (mu - mu') / sigma'

(``mu'``, ``sigma'`` the occluded statistics). The score's derivatives with respect to an
injected ``alpha`` and ``beta`` at every norm are taken once, on the recorded unoccluded pass
(run with autograd, every norm live; one backward pass), so they are total derivatives: a
shift at one norm moves the statistics of the norms after it, and that is included. A
window's statistics change at node ``l`` is computed exactly from its box (the frozen
propagation holds the old and new values of the norm's input there), so the shift that the
window causes directly; shifts caused through earlier norms are the total derivatives' part.
The score change is then the frozen local change plus
``sum_l sum_c g_alpha * alpha + g_beta * beta``.

This is hand-written because no library computes per-window statistics shifts of a traced
graph; torch's autograd gives the derivatives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import fx, nn

from xaimed.engine.incremental.graph import (
    FrozenNormRule,
    Graph,
    group_statistics,
    is_per_sample_norm,
    reference_graph,
)


@dataclass(frozen=True)
class NormShift:
    """One frozen norm's unoccluded statistics per group (float64) and the score's derivatives
    with respect to a scale ``alpha`` and shift ``beta`` of its normalised values per group."""

    groups: int
    voxels: int  # values per group: channels per group x voxels of the map
    mean: torch.Tensor  # (G,)
    var: torch.Tensor  # (G,)
    eps: float
    g_alpha: torch.Tensor  # (G,)
    g_beta: torch.Tensor  # (G,)

    def correction(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """(B,) float64: the first-order score change from the statistics' shift, for windows
        whose norm input changed from ``old`` to ``new`` (B, C, *box) inside their box."""
        batch = len(new)
        old = old.float().reshape(batch, self.groups, -1)
        new = new.float().reshape(batch, self.groups, -1)
        # Voxel by voxel differences (the change of the deviations' squares from the
        # unoccluded mean is (new - old) * (new + old - 2 mean)) keep the difference of two
        # large sums out of the rounding; the sums are float64.
        change = new - old
        twice_mean = (2 * self.mean).float()[None, :, None]
        d1 = change.sum(-1, dtype=torch.float64)
        d2 = (change * (new + old - twice_mean)).sum(-1, dtype=torch.float64)
        shift = d1 / self.voxels
        var = (self.var[None] + d2 / self.voxels - shift**2).clamp(min=0.0)
        sigma = (self.var[None] + self.eps).sqrt()
        sigma_new = (var + self.eps).sqrt()
        alpha = sigma / sigma_new - 1.0
        beta = -shift / sigma_new
        return alpha @ self.g_alpha + beta @ self.g_beta


def record_with_shifts(
    module: fx.GraphModule,
    x: torch.Tensor,
    score: Callable[[torch.Tensor], torch.Tensor],
    *,
    maps: bool,
) -> tuple[Graph, dict[fx.Node, NormShift]]:
    """The recorded pass of ``x`` with frozen norm statistics (``graph.reference_graph``) and
    the shift terms of every frozen norm: the recording runs with autograd, a zero scale and
    shift injected after every per-sample norm, and one backward pass from ``score`` (the
    explained score of the network's output, a 0-d tensor) gives their derivatives. Every
    norm is live in that pass, so the derivatives are total ones."""
    injected: dict[fx.Node, tuple[torch.Tensor, torch.Tensor]] = {}
    grads: list[torch.Tensor | None] = []

    def tap(node: fx.Node, out):
        if node.op != "call_module" or not isinstance(out, torch.Tensor) or out.ndim < 3:
            return out
        norm = module.get_submodule(str(node.target))
        if not is_per_sample_norm(norm):
            return out
        channels = int(out.shape[1])
        shape = (1, channels) + (1,) * (out.ndim - 2)
        alpha = torch.zeros(shape, dtype=out.dtype, device=out.device, requires_grad=True)
        beta = torch.zeros(shape, dtype=out.dtype, device=out.device, requires_grad=True)
        weight, bias = _affine(norm, channels, out)
        injected[node] = (alpha, beta)
        # out = weight * z + bias; z -> z * (1 + alpha) + beta (zero: the value is unchanged).
        return out + (out - bias.reshape(shape)) * alpha + weight.reshape(shape) * beta

    def after(output) -> None:
        leaves = [t for pair in injected.values() for t in pair]
        # An output of another shape is refused by the recording right after this.
        if leaves and isinstance(output, torch.Tensor) and output.ndim == (5 if maps else 2):
            value = score(output)
            if not value.requires_grad:
                # No norm lies on the score's path: every derivative is 0.
                grads.extend([None] * len(leaves))
                return
            grads.extend(torch.autograd.grad(value, leaves, allow_unused=True))

    graph = reference_graph(module, x, maps=maps, freeze_norm=True, tap=tap, after=after)
    shifts: dict[fx.Node, NormShift] = {}
    for i, node in enumerate(injected):
        if not isinstance(graph.rules.get(node), FrozenNormRule):
            continue  # e.g. instance norm with running statistics: not frozen, exact
        norm = module.get_submodule(str(node.target))
        source = graph.cache[node.all_input_nodes[0]]
        channels = int(source.shape[1])
        # A norm the score does not depend on gets no gradient (None): derivatives 0.
        g_alpha, g_beta = (
            source.new_zeros(channels, dtype=torch.float64)
            if g is None
            else g.detach().double().flatten()
            for g in grads[2 * i : 2 * i + 2]
        )
        groups = _groups(norm, channels)
        mean, var = group_statistics(source, groups)
        per = channels // groups
        shifts[node] = NormShift(
            groups=groups,
            voxels=source[0].numel() // groups,
            mean=mean,
            var=var,
            eps=float(norm.eps),  # type: ignore[arg-type]
            g_alpha=g_alpha.reshape(groups, per).sum(-1),
            g_beta=g_beta.reshape(groups, per).sum(-1),
        )
    return graph, shifts


def _groups(norm: nn.Module, channels: int) -> int:
    return int(norm.num_groups) if isinstance(norm, nn.GroupNorm) else channels  # type: ignore[arg-type]


def _affine(norm: nn.Module, channels: int, like: torch.Tensor):
    """The norm's per-channel weight and bias (ones and zeros without an affine part)."""
    weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
    w = like.new_ones(channels) if weight is None else weight.detach().to(like.dtype)
    b = like.new_zeros(channels) if bias is None else bias.detach().to(like.dtype)
    return w, b
