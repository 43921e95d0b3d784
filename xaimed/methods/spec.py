"""What a method is: its :class:`MethodInfo`, declared in the module of its runner.

Each method module ends with ``METHODS``, the MethodInfo of every method it implements (runner,
parameter model, family, needs, cost), and :mod:`xaimed.methods.registry` lists the modules.
Method modules import torch and Captum only inside their runners, so the config can validate
method names and parameters at load without importing either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    import torch

    from xaimed.methods.context import MethodContext, MethodOutput

Runner = Callable[["MethodContext", Any], "torch.Tensor | MethodOutput"]

# Measured on the sample model by benchmarks/sanity_cascade.py: its map survives
# re-initialising the top layers better than saliency's, but decorrelates once every layer is
# random, so the warning names the published result and leaves the verdict to the evaluation.
GUIDED_WARNING = (
    "failed published model- and data-randomisation sanity checks on deep image classifiers "
    "(Adebayo et al. 2018: its maps barely changed when the top layers were randomised, like "
    "edge detectors); `xaimed evaluate` (sanity) measures whether it does on this model"
)

# Needs shared by several methods, as `xaimed methods` prints them.
NEEDS_RELU = "nn.Module with ReLU modules"
NEEDS_LAYER = "a layer (auto: features entering global pooling)"
NEEDS_GROUPS = ("grouping", "baseline")


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows of a method: its name, family, summary, parameter model, runner
    (``run(context, params) -> attribution``) and cost in passes."""

    name: str
    family: str
    summary: str
    params_model: type[BaseModel]
    runner: Runner
    cost: Callable[[Any], str]
    needs: tuple[str, ...] = ()
    # Methods that need forward hooks on nn.Module submodules cannot run on TorchScript.
    needs_module: bool = False
    # Set for methods that failed published sanity checks; shown wherever their maps go.
    warning: str | None = None

    def run(self, context: MethodContext, params: Any) -> torch.Tensor | MethodOutput:
        """Run the method on one input with validated parameters."""
        return self.runner(context, params)


def fixed_cost(cost: str) -> Callable[[Any], str]:
    """A cost that does not depend on the parameters."""
    return lambda params: cost


def noise_passes(params: Any) -> str:
    """The cost of a method averaging ``params.samples`` noisy gradients."""
    return f"{params.samples} fwd + {params.samples} bwd"
