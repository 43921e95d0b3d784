"""Perturbation-family methods: occlusion, feature ablation, Shapley sampling, KernelSHAP, LIME.

All five remove parts of the input (replace them with a fill, see :mod:`xaimed.methods.fills`)
and watch the explained score change; none needs gradients, so they work on any model,
TorchScript included. The perturbed copies are made batch by batch on the input's device by
:class:`xaimed.engine.perturb.Evaluator`, never all at once.

Definitions follow Captum's, so maps equal Captum's on the same inputs: occlusion windows start
at multiples of the stride and are clipped at the border (never wrapped); a voxel's attribution
is the mean score drop over the windows that cover it (0 where none does, where Captum divides
by zero). Feature ablation, Shapley sampling, KernelSHAP and LIME attribute per feature group
(:mod:`xaimed.methods.groupings`) and paint each group's value onto its voxels. KernelSHAP and
LIME are solved here in closed form (weighted least squares) rather than with Captum's
scikit-learn models: KernelSHAP samples coalitions from the Shapley kernel and enforces
efficiency exactly; LIME samples coalitions uniformly, weights them by an exponential kernel on
the cosine distance to the full coalition and fits a ridge model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xaimed.errors import MethodError
from xaimed.methods.fills import describe_fill, make_fill
from xaimed.methods.groupings import GridGrouping, make_groups, per_axis
from xaimed.methods.params import (
    FeatureAblationParams,
    GroupParams,
    KernelShapParams,
    LimeParams,
    OcclusionParams,
    ShapleyParams,
)
from xaimed.methods.spec import NEEDS_GROUPS, MethodInfo, fixed_cost
from xaimed.methods.windows import (
    boxes_of,
    refine_drops,
    window_scores,
)

if TYPE_CHECKING:
    import torch

    from xaimed.engine.perturb import Evaluator
    from xaimed.methods.context import MethodContext, MethodOutput

FAMILY = "perturbation"


# ---------------------------------------------------------------- shared pieces


def _evaluator(ctx: MethodContext, *, patchwise: bool = True) -> Evaluator:
    from xaimed.engine.perturb import Evaluator

    return Evaluator(
        ctx.model, ctx.target, ctx.batch_size, progress=ctx.progress,
        inputs=ctx.inputs.detach(), patchwise=patchwise,
    )  # fmt: skip


def _details(evaluator: Evaluator, **extra: Any) -> dict[str, Any]:
    return {
        "perturbations": evaluator.samples,
        "batch_size": evaluator.batch_size,
        "out_of_memory_backoffs": evaluator.backoffs,
        **extra,
        **evaluator.engine_fields(),
    }


def _coalitions(
    x: torch.Tensor, fill: torch.Tensor, groups: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``build(present)``: inputs with the absent groups of each row of ``present`` filled."""
    import torch

    def build(present: torch.Tensor) -> torch.Tensor:
        keep = present.to(x.device)[:, groups][:, None]  # (B, 1, I, J, K)
        return torch.where(keep, x, fill)

    return build


def _group_setup(
    ctx: MethodContext, params: GroupParams
) -> tuple[torch.Tensor, int, torch.Tensor, dict[str, Any]]:
    groups, record = make_groups(params.grouping, ctx)
    fill = make_fill(params.baseline, ctx)
    return groups, int(record["groups"]), fill, record


def _paint(values: torch.Tensor, groups: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Each group's value on its voxels, shaped like the input (all channels alike)."""
    painted = values.to(like.device, like.dtype)[groups]
    return painted[None, None].expand_as(like).clone()


def _output(attribution: torch.Tensor, details: dict[str, Any]) -> MethodOutput:
    from xaimed.methods.context import MethodOutput

    return MethodOutput(attribution, details)


def _whole_input_warning(
    regions: int, shape: tuple[int, ...], what: str, key: str
) -> dict[str, list[str]]:
    """``{"warnings": [...]}`` when one region covers the whole input (a window larger than a
    small image): the map is then one value everywhere, which is valid but tells nothing about
    where, so the run says so rather than leaving a flat map to be read as a finding."""
    if regions != 1 or math.prod(shape) <= 1:
        return {}
    size = " x ".join(str(n) for n in shape if n > 1) or "1"
    return {
        "warnings": [
            f"one {what} covers the whole model input ({size} voxels), so the map is one value "
            f"everywhere; give a smaller {key}."
        ]
    }


# ---------------------------------------------------------------- occlusion


def occlusion(ctx: MethodContext, params: OcclusionParams) -> MethodOutput:
    import torch

    x = ctx.inputs.detach()
    shape = tuple(int(n) for n in x.shape[2:])
    window = per_axis(params.window, "window")
    stride = per_axis(params.stride, "stride")
    lo, hi = boxes_of(shape, window, stride)  # type: ignore[arg-type]
    fill = make_fill(params.baseline, ctx)
    approximate = params.approximate
    threshold = approximate.projective_threshold if approximate is not None else 1.0
    freeze = approximate is not None and approximate.freeze_norm_statistics
    engine, record = window_scores(
        ctx, params.engine, fill, method="occlusion", threshold=threshold, freeze_norm=freeze
    )
    refined: dict[str, Any] | None = None
    if approximate is not None and approximate.refine is not None:
        drops, refined = refine_drops(
            engine,
            shape,
            lo,
            hi,
            approximate.refine,
            label="occlusion",  # type: ignore[arg-type]
        )
    else:
        # Scores first: the tiled engine finds the reference on the way.
        scores = engine.scores(lo, hi, label="occlusion")
        drops = engine.reference - scores
    total = torch.zeros(shape, dtype=torch.float64, device=x.device)
    covered = torch.zeros(shape, dtype=torch.float64, device=x.device)
    for drop, a, b in zip(drops.double().tolist(), lo.tolist(), hi.tolist(), strict=True):
        box = tuple(slice(s, e) for s, e in zip(a, b, strict=True))
        total[box] += drop
        covered[box] += 1
    mean = torch.where(covered > 0, total / covered.clamp(min=1), torch.zeros_like(total))
    attribution = mean.to(x.dtype)[None, None].expand_as(x).clone()
    details = {
        **engine.sidecar_fields(),
        **record,
        "window": list(window),
        "stride": list(stride),
        "windows": len(lo),
        "baseline": describe_fill(params.baseline),
        "uncovered_voxels": int((covered == 0).sum()),
        **_whole_input_warning(len(lo), shape, "occlusion window", "window"),
    }
    if approximate is not None:
        details["approximate"] = {
            "projective_threshold": threshold
            if record["engine"] == "incremental"
            else "not applied (plain engine)",
            "refine": refined,
            "freeze_norm_statistics": freeze
            if record["engine"] == "incremental" or not freeze
            else f"not applied ({record['engine']} engine)",
        }
    return _output(attribution, details)


# ---------------------------------------------------------------- feature ablation


def feature_ablation(ctx: MethodContext, params: FeatureAblationParams) -> MethodOutput:
    import torch

    x = ctx.inputs.detach()
    if params.engine != "plain" and isinstance(params.grouping, GridGrouping):
        return _grid_ablation(ctx, params)
    if params.engine == "incremental":
        raise MethodError(
            "feature_ablation with engine: incremental needs grouping kind: grid (its groups "
            "are boxes); use engine: auto or plain."
        )
    groups, n_groups, fill, record = _group_setup(ctx, params)
    build_present = _coalitions(x, fill, groups)
    evaluator = _evaluator(ctx, patchwise=params.engine != "plain")
    reference = evaluator.score(x)[0]

    def build(start: int, stop: int) -> torch.Tensor:
        present = torch.ones(stop - start, n_groups, dtype=torch.bool)
        present[torch.arange(stop - start), torch.arange(start, stop)] = False
        return build_present(present)

    drops = reference - evaluator.scores(n_groups, build, label="feature_ablation")
    details = _details(
        evaluator, grouping=record, baseline=describe_fill(params.baseline), engine="plain"
    )
    if isinstance(params.grouping, GridGrouping):
        shape = tuple(int(n) for n in x.shape[2:])
        details.update(_whole_input_warning(n_groups, shape, "grid block", "grouping.size"))
    return _output(_paint(drops, groups, x), details)


def _grid_ablation(ctx: MethodContext, params: FeatureAblationParams) -> MethodOutput:
    """Grid blocks are the windows of an occlusion whose stride is its window, in the same
    order as the group ids, so they go through the window engines."""
    x = ctx.inputs.detach()
    shape = tuple(int(n) for n in x.shape[2:])
    groups, record = make_groups(params.grouping, ctx)
    size = per_axis(params.grouping.size, "grouping.size")  # type: ignore[union-attr]
    size = tuple(min(s, n) for s, n in zip(size, shape, strict=True))
    lo, hi = boxes_of(shape, size, size)  # type: ignore[arg-type]
    fill = make_fill(params.baseline, ctx)
    engine, used = window_scores(ctx, params.engine, fill, method="feature_ablation")
    scores = engine.scores(lo, hi, label="feature_ablation")
    drops = engine.reference - scores
    details = {
        **engine.sidecar_fields(),
        **used,
        "grouping": record,
        "baseline": describe_fill(params.baseline),
        **_whole_input_warning(len(lo), shape, "grid block", "grouping.size"),
    }
    return _output(_paint(drops, groups, x), details)


# ---------------------------------------------------------------- Shapley value sampling


def permutations(n_groups: int, samples: int, seed: int) -> torch.Tensor:
    """``samples`` random orders of the groups, (samples, G), from a generator seeded here.

    A fresh CPU generator seeded with ``seed`` draws the same permutations as Captum does from
    the global generator after ``torch.manual_seed(seed)``.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n_groups, generator=gen) for _ in range(samples)])


def shapley_sampling(ctx: MethodContext, params: ShapleyParams) -> MethodOutput:
    import torch

    x = ctx.inputs.detach()
    groups, n_groups, fill, record = _group_setup(ctx, params)
    build_present = _coalitions(x, fill, groups)
    orders = permutations(n_groups, params.samples, ctx.seed)
    # rank[p, g]: position of group g in permutation p; step k of permutation p has the
    # groups of rank <= k present. Batches run across permutations.
    rank = torch.argsort(orders, dim=1)
    evaluator = _evaluator(ctx)
    empty = evaluator.score(fill)[0]

    def build(start: int, stop: int) -> torch.Tensor:
        flat = torch.arange(start, stop)
        perm, step = flat // n_groups, flat % n_groups
        return build_present(rank[perm] <= step[:, None])

    total = params.samples * n_groups
    scores = evaluator.scores(total, build, label="shapley_sampling").reshape(
        params.samples, n_groups
    )
    before = torch.cat([empty.expand(params.samples, 1), scores[:, :-1]], dim=1)
    gains = scores - before  # gains[p, k]: value added by group orders[p, k]
    values = torch.zeros(params.samples, n_groups, dtype=gains.dtype, device=gains.device)
    values.scatter_(1, orders.to(gains.device), gains)
    details = _details(
        evaluator,
        grouping=record,
        baseline=describe_fill(params.baseline),
        permutations=params.samples,
    )
    return _output(_paint(values.mean(dim=0), groups, x), details)


# ---------------------------------------------------------------- KernelSHAP and LIME


def shapley_kernel_coalitions(n_groups: int, samples: int, seed: int) -> torch.Tensor:
    """Coalitions (samples, G) whose sizes follow the Shapley kernel, (G-1) / (k (G-k))."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    sizes = torch.arange(1, n_groups, dtype=torch.float64)
    weights = (n_groups - 1) / (sizes * (n_groups - sizes))
    k = sizes[torch.multinomial(weights, samples, replacement=True, generator=gen)].long()
    ranks = torch.argsort(torch.rand(samples, n_groups, generator=gen), dim=1)
    return ranks < k[:, None]


def _solve_kernel_shap(z: torch.Tensor, y: torch.Tensor, empty: float, full: float) -> torch.Tensor:
    """Least squares of ``y - empty`` on ``z`` with the coefficients summing to full - empty."""
    import torch

    zd, yd = z.double(), y.double() - empty
    delta = full - empty
    # Eliminate the last coefficient with the efficiency constraint.
    a = zd[:, :-1] - zd[:, -1:]
    b = yd - zd[:, -1] * delta
    head = torch.linalg.lstsq(a, b[:, None], driver="gelsd").solution[:, 0]
    return torch.cat([head, (delta - head.sum())[None]])


def kernel_shap(ctx: MethodContext, params: KernelShapParams) -> MethodOutput:
    import torch

    x = ctx.inputs.detach()
    groups, n_groups, fill, record = _group_setup(ctx, params)
    build_present = _coalitions(x, fill, groups)
    evaluator = _evaluator(ctx)
    full, empty = (float(v) for v in evaluator.score(torch.cat([x, fill])))
    if n_groups == 1:
        values = torch.tensor([full - empty], dtype=torch.float64)
    else:
        z = shapley_kernel_coalitions(n_groups, params.samples, ctx.seed)
        y = evaluator.scores(len(z), lambda s, e: build_present(z[s:e]), label="kernel_shap")
        values = _solve_kernel_shap(z, y.cpu(), empty, full)
    details = _details(
        evaluator,
        grouping=record,
        baseline=describe_fill(params.baseline),
        coalitions=params.samples,
    )
    return _output(_paint(values, groups, x), details)


def lime(ctx: MethodContext, params: LimeParams) -> MethodOutput:
    import torch

    x = ctx.inputs.detach()
    groups, n_groups, fill, record = _group_setup(ctx, params)
    build_present = _coalitions(x, fill, groups)
    evaluator = _evaluator(ctx)
    gen = torch.Generator().manual_seed(ctx.seed)
    z = torch.rand(params.samples, n_groups, generator=gen) < 0.5
    y = evaluator.scores(len(z), lambda s, e: build_present(z[s:e]), label="lime").cpu().double()
    zd = z.double()
    cosine = zd.sum(1) / (zd.norm(dim=1) * math.sqrt(n_groups)).clamp(min=1e-12)
    weights = torch.exp(-((1 - cosine) ** 2) / params.kernel_width**2)
    design = torch.cat([zd, torch.ones(len(z), 1, dtype=torch.float64)], dim=1)
    penalty = torch.eye(n_groups + 1, dtype=torch.float64) * params.alpha
    penalty[-1, -1] = 0.0  # the intercept is not penalised
    gram = design.T @ (weights[:, None] * design) + penalty
    coef = torch.linalg.lstsq(gram, design.T @ (weights * y), driver="gelsd").solution
    details = _details(
        evaluator,
        grouping=record,
        baseline=describe_fill(params.baseline),
        coalitions=params.samples,
        intercept=float(coef[-1]),
    )
    return _output(_paint(coef[:-1], groups, x), details)


# The methods of this module, in the order `xaimed methods` lists them.
METHODS = (
    MethodInfo(
        name="occlusion", family="perturbation",
        summary="Score drop when a sliding box is replaced by the baseline.",
        params_model=OcclusionParams, runner=occlusion,
        needs=("baseline",), cost=fixed_cost("1 + one fwd per window position"),
    ),
    MethodInfo(
        name="feature_ablation", family="perturbation",
        summary="Score drop when each feature group is replaced by the baseline.",
        params_model=FeatureAblationParams, runner=feature_ablation,
        needs=NEEDS_GROUPS, cost=fixed_cost("1 + one fwd per group"),
    ),
    MethodInfo(
        name="shapley_sampling", family="perturbation",
        summary="Shapley values of feature groups, sampled over random permutations.",
        params_model=ShapleyParams, runner=shapley_sampling,
        needs=NEEDS_GROUPS, cost=lambda q: f"1 + {q.samples} x groups fwd",
    ),
    MethodInfo(
        name="kernel_shap", family="perturbation",
        summary="KernelSHAP: Shapley values of feature groups by weighted regression.",
        params_model=KernelShapParams, runner=kernel_shap,
        needs=NEEDS_GROUPS, cost=lambda q: f"{q.samples + 2} fwd",
    ),
    MethodInfo(
        name="lime", family="perturbation",
        summary="LIME: a locally weighted linear model of the score over feature groups.",
        params_model=LimeParams, runner=lime,
        needs=NEEDS_GROUPS, cost=lambda q: f"{q.samples + 1} fwd",
    ),
)  # fmt: skip
