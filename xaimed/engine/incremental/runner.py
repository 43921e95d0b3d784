"""Score occlusion windows by recomputing, layer by layer, only what each window changes.

The unoccluded forward pass is recorded once (every node's output, see ``graph.reference_graph``). A
batch of windows then flows through the graph as patches: at each node only the box its
receptive field makes different is computed, reading the rest of every region it needs from
the cache, until the box covers the whole map; from there the node's op runs on whole maps, as
the network does. Global average pooling is updated from the box alone (cached sum - old box
sum + new box sum). The scores equal those of complete forward passes of the occluded inputs,
up to floating-point rounding (the same ops on the same values, summed in another order).
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from xaimed.engine.counting import PassCount, widen
from xaimed.engine.incremental import boxes as bx
from xaimed.engine.incremental.graph import (
    ElementwiseRule,
    FrozenNormRule,
    GlobalMeanRule,
    Graph,
    NoRule,
    NotIncremental,
    ShapeRule,
    SlidingRule,
    TransposedRule,
    UpsampleRule,
    call,
    reference_graph,
    trace,
)
from xaimed.engine.incremental.normshift import NormShift, record_with_shifts
from xaimed.engine.incremental.patches import (
    Const,
    PaddedCache,
    Patch,
    Whole,
    box_mask,
    crop,
    gather,
    read,
    whole,
)
from xaimed.engine.perturb import ProgressMeter, run_batches
from xaimed.engine.targets import TargetReduction

log = logging.getLogger("xaimed")

# Windows in one batch at most: beyond this the per-op overhead is amortised and only memory
# grows.
MAX_WINDOWS = 512

State = Patch | Whole | Const


@dataclass(frozen=True)
class WeightedRegions:
    """A score that is a weighted sum of the network's output: ``regions`` (L, *dims) holds
    each output voxel's weight per label (a tiled pass's blending weight over the summed
    weights, times the label's region)."""

    regions: torch.Tensor


def _triple(shape: Any) -> bx.Triple:
    return tuple(int(n) for n in shape[-3:])  # type: ignore[return-value]


@dataclass
class IncrementalScorer:
    """Target scores of occluded copies of ``x``, computed incrementally.

    ``count``, when given, receives
    the windows scored and the work done in units of full forward passes (the convolution and
    pooling multiply-adds computed, over those of one whole pass).
    """

    graph: Graph
    x: torch.Tensor
    fill: torch.Tensor
    target: int
    batch_size: int
    autocast_dtype: torch.dtype | None = None
    progress: Any = None
    count: PassCount | None = None
    # A segmentation network: its maps are reduced to scores over each label's region, from
    # the changed box of the output alone (the rest of the region keeps its cached sum).
    reducer: TargetReduction | WeightedRegions | None = None
    # With a reducer: return each window's change of the target's sum (float64) instead of
    # the finished score; a tiled pass adds those changes up over the patches a window touches.
    deltas: bool = False
    # Frozen norms' first-order statistics correction (:mod:`.normshift`); empty: none.
    shifts: dict[fx.Node, NormShift] = field(default_factory=dict)
    backoffs: int = 0
    windows: int = 0
    batches: int = 0
    whole_from: dict[str, dict[str, str]] = field(default_factory=dict)
    _caches: dict[fx.Node, PaddedCache] = field(default_factory=dict)
    _sums: dict[fx.Node, torch.Tensor] = field(default_factory=dict)
    _last_use: dict[fx.Node, int] = field(default_factory=dict)
    _sized: bool = False
    _state_bytes: int = 0
    _work: float = 0.0
    _costs: dict[fx.Node, int] = field(default_factory=dict)
    _correction: torch.Tensor | None = None  # (B,) float64, of the batch being computed

    def __post_init__(self) -> None:
        order = {n: i for i, n in enumerate(self.graph.nodes)}
        for node in self.graph.nodes:
            for user in node.users:
                self._last_use[node] = max(self._last_use.get(node, 0), order[user])
            rule = self.graph.rules.get(node)
            if isinstance(rule, SlidingRule):
                source = self.graph.cache[node.all_input_nodes[0]]
                self._costs[node] = math.prod(rule.op.kernel) * int(source.shape[1])
            elif isinstance(rule, TransposedRule):
                # Each output voxel receives about kernel / stride products per input channel.
                source = self.graph.cache[node.all_input_nodes[0]]
                per = math.prod(rule.op.kernel) * int(source.shape[1]) // math.prod(rule.op.stride)
                self._costs[node] = max(1, per)
        self._full_work = sum(
            self.graph.cache[n].numel() * per_voxel for n, per_voxel in self._costs.items()
        )

    # ------------------------------------------------------------ public

    def scores(
        self, lo: torch.Tensor, hi: torch.Tensor, *, label: str, threshold: float
    ) -> torch.Tensor:
        """Target scores (N,) of ``x`` with the boxes ``[lo, hi)`` (N, 3) replaced by the fill.

        ``threshold`` below 1 caps every changed box at that fraction of its map per axis (the
        approximate mode: changes outside the cap are ignored); 1 is exact. It is an argument,
        not a setting of the scorer, so one scorer can score exact and capped windows without
        being changed in between."""
        total = len(lo)

        def counted(n: int) -> None:
            self._grow_batch(n)
            self.windows += n

        return run_batches(
            self,
            total,
            lambda start, stop: self._batch(lo[start:stop], hi[start:stop], threshold),
            ProgressMeter(label, total, self.progress),
            too_big="one occlusion window does not fit in memory on this device ({exc}); use a "
            "smaller input or runtime.device: cpu.",
            unit=" windows",
            after=counted,
        )

    def sidecar_fields(self) -> dict[str, Any]:
        """What the sidecar says about the incremental computation."""
        return {
            "windows_computed": self.windows,
            "batches": self.batches,
            "windows_per_batch": self.batch_size,
            "out_of_memory_backoffs": self.backoffs,
            "cache_forwards": 1,
            "frozen_norm_statistics": sorted(
                n.name for n, r in self.graph.rules.items() if isinstance(r, FrozenNormRule)
            ),
            "norm_statistics_correction": "first_order" if self.shifts else None,
            "full_pass_equivalent": round(self.full_pass_equivalent, 3),
            "whole_maps_from": [{"node": name, **about} for name, about in self.whole_from.items()],
        }

    # ------------------------------------------------------------ batches

    def _grow_batch(self, batch: int) -> None:
        """After the first batch, take as many windows at once as fit where full forward
        passes would: a window's patches are far smaller than a whole forward pass."""
        if self._sized or self.backoffs:
            return
        self._sized = True
        full = sum(
            v.numel() * v.element_size()
            for n, v in self.graph.cache.items()
            if n in self.graph.depends and isinstance(v, torch.Tensor)
        )
        per_window = max(1, self._state_bytes // max(1, batch))
        self.batch_size = int(
            min(MAX_WINDOWS, max(self.batch_size, self.batch_size * full // per_window))
        )

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.x.device.type, dtype=self.autocast_dtype)

    @property
    def full_pass_equivalent(self) -> float:
        """Work done so far in units of one whole forward pass."""
        return self._work / max(1, self._full_work)

    def _batch(self, lo: torch.Tensor, hi: torch.Tensor, threshold: float) -> torch.Tensor:
        self.batches += 1
        self._state_bytes = 0
        self._correction = None
        work = self._work
        env: dict[fx.Node, State] = {}
        graph = self.graph
        result: Any = None
        with torch.no_grad(), self._autocast():
            for index, node in enumerate(graph.nodes):
                if node.op == "output":
                    result = self._output(node.args[0], env)  # type: ignore[arg-type]
                    break
                if node not in graph.depends:
                    continue
                if node is graph.input_node:
                    state: State = self._input(lo, hi)
                else:
                    state = self._step(node, env, threshold)
                env[node] = state
                if isinstance(state, Patch | Whole) and isinstance(
                    getattr(state, "values", getattr(state, "value", None)), torch.Tensor
                ):
                    tensor = state.values if isinstance(state, Patch) else state.value
                    self._state_bytes += tensor.numel() * tensor.element_size()
                for arg in node.all_input_nodes:
                    if self._last_use.get(arg, -1) <= index:
                        env.pop(arg, None)
        if self.count is not None:
            self.count.add(
                samples=len(lo), calls=1, equivalent=(self._work - work) / max(1, self._full_work)
            )
        if self.deltas:
            scores = result[:, self.target]
        else:
            scores = widen(result.reshape(result.shape[0], -1)[:, self.target])
        if self._correction is not None:
            scores = scores + self._correction.to(scores.device, scores.dtype)
        return scores

    # ------------------------------------------------------------ states

    def _state(self, node: fx.Node, env: dict[fx.Node, State]) -> State:
        return env[node] if node in self.graph.depends else Const(self.graph.cache[node])

    def _cache(self, node: fx.Node) -> PaddedCache:
        if node not in self._caches:
            self._caches[node] = PaddedCache(self.graph.cache[node])
        return self._caches[node]

    def _output(self, node: fx.Node, env: dict[fx.Node, State]) -> Any:
        """The network's output as scores: rows as they are, or region-reduced maps."""
        if self.reducer is None:
            return self._as_whole(node, env)
        state = self._state(node, env)
        if self.deltas:
            return self._delta(node, state)
        if not isinstance(self.reducer, TargetReduction):
            raise NotIncremental("weighted regions give score changes only")
        cached = self.graph.cache[node]
        dims = _triple(cached.shape)
        if node not in self._sums:
            self._sums[node] = self.reducer.box_sums(cached.double(), None)  # (1, L)
        if isinstance(state, Patch):
            # Only the box changed: swap its old sum for its new one, per window.
            regions = self.reducer.regions
            region = None
            if regions is not None:
                region = gather(regions[None].to(cached.dtype), state.lo, state.size)
            old = self.reducer.region_sums(gather(cached, state.lo, state.size), region)
            new = self.reducer.region_sums(state.values, region)
            sums = self._sums[node] + new.double() - old.double()
        else:
            sums = self.reducer.box_sums(state.value.double(), None)
        return self.reducer.finish(sums, dims)

    def _delta(self, node: fx.Node, state: State) -> torch.Tensor:
        """(B, L) float64: how much each window changes the region sums, from the changed box
        alone; the difference is taken voxel by voxel before it is summed, so that it does not
        drown in the rounding of two large sums."""
        reducer = self.reducer
        if reducer is None or reducer.regions is None:
            raise NotIncremental("score changes need a region reduction")
        cached = self.graph.cache[node]
        if isinstance(state, Patch):
            lo, size = state.lo, state.size
            new = state.values
        elif isinstance(state, Whole):
            lo, size = torch.zeros(len(state.value), 3, dtype=torch.long), _triple(cached.shape)
            new = state.value
        else:
            return torch.zeros(1, cached.shape[1], dtype=torch.float64)
        weights = gather(reducer.regions[None].to(cached.dtype), lo, size)
        change = (new.to(cached.dtype) - gather(cached, lo, size)) * weights
        return change.flatten(2).sum(-1, dtype=torch.float64)

    def _as_whole(self, node: fx.Node, env: dict[fx.Node, State]) -> Any:
        state = self._state(node, env)
        if isinstance(state, Patch):
            return whole(self.graph.cache[node], state)
        return state.value

    def _finish(self, values: torch.Tensor, start: torch.Tensor, dims: bx.Triple) -> State:
        """A patch, or whole maps once the box covers the map."""
        if _triple(values.shape) == dims:
            return Whole(values)
        return Patch(values, start)

    def _input(self, lo: torch.Tensor, hi: torch.Tensor) -> State:
        dims = _triple(self.x.shape)
        start, extent = bx.uniform(lo, hi, dims)
        inside = box_mask(start, extent, lo, hi).to(self.x.device)
        values = torch.where(
            inside, gather(self.fill, start, extent), gather(self.x, start, extent)
        )
        return self._finish(values, start, dims)

    def _step(self, node: fx.Node, env: dict[fx.Node, State], threshold: float) -> State:
        graph = self.graph
        rule = graph.rules[node]
        inputs = [n for n in node.all_input_nodes if n in graph.depends]
        states = [env[n] for n in inputs]
        patched = all(isinstance(s, Patch) for s in states)
        if isinstance(rule, ShapeRule) and patched:
            stand_in = {n: _stand_in(graph.cache[n], len(states[0].lo)) for n in inputs}  # type: ignore[union-attr]
            return Whole(self._call(node, lambda n: stand_in.get(n, graph.cache[n])))
        if not patched or isinstance(rule, NoRule | ShapeRule):
            if isinstance(rule, NoRule) and any(isinstance(s, Patch) for s in states):
                self._note_whole(node, rule.reason)
            value = self._call(node, lambda n: self._as_whole(n, env))
            if node in self._costs and isinstance(value, torch.Tensor):
                self._work += value.numel() * self._costs[node]
            return Whole(value)
        patches: dict[fx.Node, Patch] = dict(zip(inputs, states, strict=True))  # type: ignore[arg-type]
        if isinstance(rule, SlidingRule):
            return self._sliding(node, rule, inputs[0], patches[inputs[0]], threshold)
        if isinstance(rule, GlobalMeanRule):
            return self._global_mean(node, inputs[0], patches[inputs[0]])
        if isinstance(rule, TransposedRule):
            return self._transposed(node, rule, inputs[0], patches[inputs[0]], threshold)
        if isinstance(rule, UpsampleRule):
            return self._upsample(node, rule, inputs[0], patches[inputs[0]], threshold)
        if isinstance(rule, FrozenNormRule):
            patch = patches[inputs[0]]
            shift = self.shifts.get(node)
            if shift is not None:
                old = gather(graph.cache[inputs[0]], patch.lo, patch.size)
                change = shift.correction(old, patch.values)
                self._correction = change if self._correction is None else self._correction + change
            return Patch(rule.run(patch.values), patch.lo)
        if not isinstance(rule, ElementwiseRule):
            raise NotIncremental(f"{node.name}: no way to compute a changed box for its rule")
        return self._elementwise(node, patches)

    def _call(self, node: fx.Node, value_of) -> Any:
        args = fx.node.map_arg(node.args, value_of)
        kwargs = fx.node.map_arg(node.kwargs, value_of)
        return call(self.graph.module, node, args, kwargs)  # type: ignore[arg-type]

    def _note_whole(self, node: fx.Node, reason: str) -> None:
        if node.name in self.whole_from:
            return
        op = self.graph.describe(node)
        self.whole_from[node.name] = {"op": op, "reason": reason}
        log.info(
            "incremental occlusion: %s (%s) has no changed-box rule (%s); from there on whole "
            "maps are computed, as the plain engine does",
            node.name,
            op,
            reason,
        )

    # ------------------------------------------------------------ rules

    def _sliding(
        self, node: fx.Node, rule: SlidingRule, source: fx.Node, patch: Patch, threshold: float
    ) -> State:
        dims = _triple(self.graph.cache[node].shape)
        lo, hi = bx.reach(patch.lo, patch.hi, rule.op, dims)
        lo, hi = bx.cap(lo, hi, dims, threshold)
        start, extent = bx.uniform(lo, hi, dims)
        region_start, region_extent = bx.region(start, extent, rule.op)
        values = read(
            self._cache(source),
            patch,
            region_start,
            region_extent,
            rule.op.pad,
            rule.pad_hi,
            rule.pad_value,
        )
        out = rule.run(values)
        self._work += out.numel() * self._costs.get(node, 0)
        return self._finish(out, start, dims)

    def _transposed(
        self, node: fx.Node, rule: TransposedRule, source: fx.Node, patch: Patch, threshold: float
    ) -> State:
        """Transposed convolution over the output box the changed inputs write to, from every
        input that writes into that box (inputs past the map's border read as zeros, which
        write nothing)."""
        op = rule.op
        dims = _triple(self.graph.cache[node].shape)
        s, p = torch.tensor(op.stride), torch.tensor(op.pad)
        reach = torch.tensor(op.span) - 1
        lo, hi = bx.clip(patch.lo * s - p, (patch.hi - 1) * s - p + reach + 1, dims)
        lo, hi = bx.cap(lo, hi, dims, threshold)
        start, extent = bx.uniform(lo, hi, dims)
        # Inputs i with i*s - p <= out and i*s - p + reach >= out, for out in the box.
        # (Rounded down: with a kernel smaller than the stride the box may start in a gap.)
        first = torch.div(start + p - reach, s, rounding_mode="floor")
        count = tuple(
            (e - 1 + r) // st + 2 for e, r, st in zip(extent, op.span, op.stride, strict=True)
        )
        # Zeros before the map for the first inputs (at most (span - 1 - pad) / stride).
        pad_lo = tuple(
            max(0, -(-(r - 1 - pd) // st) + 1)
            for r, pd, st in zip(op.span, op.pad, op.stride, strict=True)
        )
        pad_hi = count
        values = read(
            self._cache(source), patch, first + torch.tensor(pad_lo), count, pad_lo, pad_hi, 0.0
        )
        out = rule.run(values)
        # The run's voxel t sits at map coordinate first*s - p + t.
        out = crop(out, start - (first * s - p), extent)
        self._work += out.numel() * self._costs.get(node, 0)
        return self._finish(out, start, dims)

    def _elementwise(self, node: fx.Node, patches: dict[fx.Node, Patch]) -> State:
        dims = _triple(self.graph.cache[node].shape)
        boxes = [(p.lo, p.hi) for p in patches.values()]
        start, extent = bx.uniform(*bx.union(boxes), dims)
        aligned = {
            n: p.values
            if p.size == extent and torch.equal(p.lo, start)
            else read(self._cache(n), p, start, extent)
            for n, p in patches.items()
        }
        out = self._call(node, lambda n: aligned[n] if n in aligned else self.graph.cache[n])
        return self._finish(out, start, dims)

    def _global_mean(self, node: fx.Node, source: fx.Node, patch: Patch) -> State:
        cached = self.graph.cache[source]
        if source not in self._sums:
            self._sums[source] = cached.double().sum(dim=(2, 3, 4))  # (1, C)
        old = gather(cached, patch.lo, patch.size).double().sum(dim=(2, 3, 4))
        new = patch.values.double().sum(dim=(2, 3, 4))
        mean = (self._sums[source] + new - old) / math.prod(_triple(cached.shape))
        like = self.graph.cache[node]
        return Whole(mean.to(like.dtype).reshape(len(patch.lo), *like.shape[1:]))

    def _upsample(
        self, node: fx.Node, rule: UpsampleRule, source: fx.Node, patch: Patch, threshold: float
    ) -> State:
        dims = _triple(self.graph.cache[node].shape)
        src_dims = _triple(self.graph.cache[source].shape)
        r = torch.tensor(rule.scale, dtype=torch.long)
        linear = rule.mode != "nearest"
        margin = 2 if linear else 0
        # Linear interpolation reads the neighbours on both sides: one more input voxel.
        lo, hi = bx.clip(patch.lo * r - r * int(linear), patch.hi * r + r * int(linear), dims)
        lo, hi = bx.cap(lo, hi, dims, threshold)
        start, extent = bx.uniform(lo, hi, dims)
        # Input region with a margin, so that the clamping of the interpolation at the region's
        # edges never reaches an output voxel we keep (it matches the map's own at its border).
        in_lo = torch.div(start, r, rounding_mode="floor") - margin
        in_hi = -torch.div(-(start + torch.tensor(extent)), r, rounding_mode="floor") + margin
        in_lo, in_hi = bx.clip(in_lo, in_hi, src_dims)
        in_start, in_extent = bx.uniform(in_lo, in_hi, src_dims)
        values = read(self._cache(source), patch, in_start, in_extent)
        kwargs: dict[str, Any] = {"scale_factor": rule.scale, "mode": rule.mode}
        if linear:
            kwargs["align_corners"] = False
        up = torch.nn.functional.interpolate(values, **kwargs)
        return self._finish(crop(up, start - in_start * r, extent), start, dims)


def _stand_in(cached: torch.Tensor, batch: int) -> torch.Tensor:
    """A tensor with the batched shape of a node's maps, without memory, for shape queries."""
    return cached.expand(batch, *cached.shape[1:])


def build_incremental_scorer(
    network: torch.nn.Module,
    x: torch.Tensor,
    fill: torch.Tensor,
    *,
    target: int,
    batch_size: int,
    autocast_dtype: torch.dtype | None,
    progress: Any = None,
    count: PassCount | None = None,
    reducer: TargetReduction | None = None,
    freeze_norm: bool = False,
    correct_norm_shift: bool = True,
) -> IncrementalScorer:
    """Trace ``network``, record its unoccluded forward pass on ``x`` and return the scorer
    (raises NotIncremental, with the reason, when the network cannot be handled at all).

    With ``freeze_norm``, ``correct_norm_shift`` adds the first-order correction for the frozen
    statistics' shift (:mod:`.normshift`); without it, only the local change is kept."""
    module = trace(network)
    context = (
        nullcontext()
        if autocast_dtype is None
        else torch.autocast(device_type=x.device.type, dtype=autocast_dtype)
    )
    dims = _triple(x.shape)

    def score(out: torch.Tensor) -> torch.Tensor:
        if reducer is None:
            return out.reshape(1, -1)[0, target]
        return reducer.finish(reducer.box_sums(out, None), dims)[0, target]

    shifts: dict[fx.Node, NormShift] = {}
    maps = reducer is not None
    with context:
        if freeze_norm and correct_norm_shift:
            graph, shifts = record_with_shifts(module, x, score, maps=maps)
        else:
            graph = reference_graph(module, x, maps=maps, freeze_norm=freeze_norm)
    users = [u for u in graph.input_node.users if u.op != "output"]
    if users and all(isinstance(graph.rules.get(u), NoRule) for u in users):
        first = users[0]
        reason = graph.rules[first].reason  # type: ignore[union-attr]
        raise NotIncremental(f"its first op, {first.name} ({graph.describe(first)}), {reason}")
    return IncrementalScorer(
        graph,
        x,
        fill,
        target,
        batch_size,
        autocast_dtype=autocast_dtype,
        progress=progress,
        count=count,
        reducer=reducer,
        shifts=shifts,
    )
