"""Choose how many samples go through the model at once, from a memory budget."""

from __future__ import annotations

import torch

# Above this, larger batches buy no speed on the models we target and only risk memory.
MAX_BATCH = 64


def available_memory(device: torch.device) -> int:
    """Bytes the device has free now (CUDA), or the host's available memory (CPU)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30  # no /proc (macOS, Windows): assume a modest machine


def bytes_per_sample(model: torch.nn.Module, inputs: torch.Tensor) -> int:
    """Memory one sample needs for a forward and backward pass, measured on ``inputs[:1]``.

    Autograd's saved-tensor hooks see every tensor kept for the backward pass, for nn.Modules
    and TorchScript alike; that is what grows with the batch. Inputs, their gradients and a
    method's scaled or noisy copies add a few input-sized buffers on top.
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):
            seen[id(t)] = t.numel() * t.element_size()
        return t

    x = inputs[:1].detach().clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    input_bytes = x.numel() * x.element_size()
    return sum(seen.values()) + 4 * input_bytes


def choose_batch_size(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    *,
    budget: int | None,
    fixed: int | None,
) -> int:
    """``fixed`` when given; otherwise as many samples as fit in the budget (at least one).

    Without a budget, half of what the device has free is used, leaving room for the model,
    the data and whatever else runs beside us.
    """
    if budget is None:
        budget = available_memory(inputs.device) // 2
    tiled = size_patch_batches(model, inputs, budget)
    size_slice_calls(model, inputs, budget)
    if fixed is not None:
        return fixed
    per_sample = max(1, bytes_per_sample(model, inputs))
    batch = max(1, min(MAX_BATCH, budget // per_sample))
    if tiled is not None:
        # A call with gradients holds max(batch, patches_per_call) patch samples at once.
        batch = min(batch, tiled)
    return int(batch)


def size_patch_batches(model: torch.nn.Module, inputs: torch.Tensor, budget: int) -> int | None:
    """Give every tiling wrapper inside ``model`` the number of patch samples that fit in
    ``budget`` with their activations kept for backward; returns that number (None: no tiling,
    or an input that fits in one patch)."""
    from xaimed.engine.tiling import TiledInference

    sized: int | None = None
    for module in model.modules():
        if not isinstance(module, TiledInference):
            continue
        plan = module.plan(tuple(int(n) for n in inputs.shape[2:]), inputs.device)
        if plan is None:
            continue
        patch = inputs[(slice(0, 1), slice(None), *plan.boxes[0])]
        per_patch = max(1, bytes_per_sample(module.model, patch))
        # Half of the budget for the patches' activations; the rest holds the input-sized
        # buffers (inputs, gradients, blended outputs) of the batch.
        module.patches_per_call = int(max(1, budget // 2 // per_patch))
        sized = module.patches_per_call if sized is None else min(sized, module.patches_per_call)
    return sized


def size_slice_calls(model: torch.nn.Module, inputs: torch.Tensor, budget: int | None) -> None:
    """Give every slice-wise model inside ``model`` the number of slices per network call that
    fit in ``budget`` (None: half of what the device has free) with their activations kept for
    backward (at least one)."""
    from xaimed.models.slicewise import SliceWise

    if budget is None:
        budget = available_memory(inputs.device) // 2

    for module in model.modules():
        if not isinstance(module, SliceWise) or module.axis is None:
            continue
        xs = module.moved(inputs[:1])
        one = module.stacks(xs, torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
        per_slice = max(1, bytes_per_sample(module.network, one))
        # Half of the budget for one call's activations, as for patches under tiling.
        module.slices_per_call = int(max(1, min(xs.shape[2] * MAX_BATCH, budget // 2 // per_slice)))
