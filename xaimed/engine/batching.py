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
    if fixed is not None:
        return fixed
    if budget is None:
        budget = available_memory(inputs.device) // 2
    per_sample = max(1, bytes_per_sample(model, inputs))
    return int(max(1, min(MAX_BATCH, budget // per_sample)))
