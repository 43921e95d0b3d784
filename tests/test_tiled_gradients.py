"""Gradients under tiling in bounded memory: patch batches recomputed in the backward pass."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROOT, TESTS, run_method
from seg_models import TinySeg

from xaimed.config import TargetSection
from xaimed.engine.batching import bytes_per_sample, choose_batch_size
from xaimed.engine.targets import CaseRegions, TargetReduction
from xaimed.engine.tiling import TiledInference


def _scored(network: torch.nn.Module, patches_per_call: int | None) -> TargetReduction:
    tiled = TiledInference(network, (8, 8, 8), overlap=0.5)
    tiled.patches_per_call = patches_per_call
    spec = TargetSection.model_validate({"region": "volume", "reduction": "sum"})
    reduction = TargetReduction(tiled, spec, output="logits")
    reduction.use(CaseRegions(segmentation=True))  # what configure() decides for a per-voxel output
    return reduction


@pytest.mark.parametrize(
    "name", ["saliency", "input_x_gradient", "guided_backprop", "deeplift", "lrp"]
)
def test_patch_batches_give_the_one_call_map(name):
    torch.manual_seed(0)
    network = TinySeg().eval()
    x = torch.randn(1, 1, 14, 14, 14, generator=torch.Generator().manual_seed(1))
    one_call, _, _ = run_method(name, _scored(network, None), x, context={"network": network})
    batched, _, passes = run_method(name, _scored(network, 3), x, context={"network": network})
    scale = float(one_call.abs().max())
    assert scale > 0
    assert float((batched - one_call).abs().max()) <= 1e-5 * scale
    assert passes.backward > 0


def test_the_memory_budget_sets_the_patch_batch():
    torch.manual_seed(0)
    network = TinySeg().eval()
    x = torch.randn(1, 1, 24, 24, 24)
    model = _scored(network, None)
    per_patch = bytes_per_sample(network, x[:, :, :8, :8, :8])
    batch = choose_batch_size(model, x, budget=2 * 5 * per_patch, fixed=None)
    assert model.model.patches_per_call == 5
    assert 1 <= batch <= 5


# Runs in its own process so that its peak resident memory is its own.
_WHOLE_VOLUME = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    sys.path.insert(0, {tests!r})
    from seg_models import TinySeg
    from xaimed.config import TargetSection
    from xaimed.engine.batching import bytes_per_sample, choose_batch_size
    from xaimed.engine.counting import CountingModel
    from xaimed.engine.targets import CaseRegions, TargetReduction
    from xaimed.engine.tiling import TiledInference
    from xaimed.methods import registry
    from xaimed.methods.context import MethodContext

    torch.set_num_threads(2)
    torch.manual_seed(0)
    network = TinySeg(width=4).eval()
    x = torch.randn(1, 1, 192, 192, 128)
    tiled = TiledInference(network, (48, 48, 48), overlap=0.25)
    spec = TargetSection.model_validate({{"region": "volume", "reduction": "sum"}})
    reduction = TargetReduction(tiled, spec, output="logits")
    reduction.use(CaseRegions(segmentation=True))
    model = CountingModel(reduction)
    budget = 64 * 2**20
    batch = choose_batch_size(model, x, budget=budget, fixed=None)
    plan = tiled.plan(tuple(x.shape[2:]), x.device)
    per_patch = bytes_per_sample(network, x[:, :, :48, :48, :48])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ctx = MethodContext(model=model, inputs=x, target=1, seed=0, batch_size=batch,
                        device=x.device, network=network)
    info = registry.find("saliency")
    out = info.run(ctx, info.params_model.model_validate({{}}))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    attribution = out if isinstance(out, torch.Tensor) else out.attribution
    print(json.dumps({{
        "grown": after - before, "per_patch": per_patch, "patches": len(plan.boxes),
        "patches_per_call": tiled.patches_per_call, "volume_bytes": x.numel() * 4,
        "budget": budget, "finite": bool(torch.isfinite(attribution).all()),
        "nonzero": float(attribution.abs().max()) > 0,
    }}))
    """
)


def test_a_whole_volume_gradient_stays_within_its_memory_budget():
    script = _WHOLE_VOLUME.format(tests=str(TESTS))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["finite"] and got["nonzero"]
    assert got["patches_per_call"] < got["patches"]
    # Keeping every patch's activations, as one call does, would need all of these at once.
    one_call = got["per_patch"] * got["patches"]
    # Volume-sized buffers (input, its gradient, blended outputs per label, weights, the
    # method's copies) plus the patch batch's share of the budget.
    allowed = 12 * got["volume_bytes"] + got["budget"]
    assert got["grown"] < allowed, got
    assert got["grown"] < one_call / 2, got
    print(got)
