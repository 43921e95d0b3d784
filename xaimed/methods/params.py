"""Parameters of every attribution method, as pydantic models.

Kept apart from the implementations so that the config can validate every method's parameters
at load without importing torch or any method family (``xaimed validate`` and ``xaimed methods``
stay fast, and the config does not depend on the code that runs the methods). The registry pairs
each model with its method; the implementations import their models from here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from xaimed.methods.fills import FILL_DEFAULT, BlurFill, FillSpec
from xaimed.methods.groupings import GridGrouping, GroupingSpec, Size
from xaimed.methods.windows import ENGINE_DESCRIPTION, Approximate, Engine

# Defaults chosen by measurement (benchmarks/baselines.py, README "Defaults chosen by
# measurement"): against a blurred copy, the path from baseline to input adds the image's detail
# (a lesion) rather than the whole head's contrast against a constant, which put integrated
# gradients' strongest voxels on the head's outline; GradientShap did best with [zero].
BASELINE_DEFAULT = "Reference input; default: a blurred copy of the image, sigma 8 mm."


class Params(BaseModel):
    """Base of method parameters: unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- gradient family


class NoParams(Params):
    """A method without parameters."""


class IntegratedGradientsParams(Params):
    """Integrated gradients along the straight path from a baseline to the input."""

    baseline: FillSpec = Field(default_factory=BlurFill, description=BASELINE_DEFAULT)
    steps: Annotated[int, Field(ge=2, le=10_000)] = 50
    integration: Literal["gausslegendre", "riemann_trapezoid", "riemann_middle"] = "gausslegendre"
    internal_batch_size: Annotated[int, Field(ge=1)] | None = None


class NoiseTunnelParams(Params):
    """SmoothGrad / VarGrad: gradients averaged (or their variance) over noisy copies."""

    samples: Annotated[int, Field(ge=1, le=10_000)] = 25
    noise: Annotated[float, Field(gt=0)] = Field(
        0.15, description="Noise standard deviation as a fraction of the input's value range."
    )
    internal_batch_size: Annotated[int, Field(ge=1)] | None = None


class DeepLiftParams(Params):
    """DeepLift (rescale rule) against a baseline."""

    baseline: FillSpec = Field(default_factory=BlurFill, description=BASELINE_DEFAULT)


class GradientShapParams(Params):
    """GradientShap: expected gradients over noisy points between baselines and the input."""

    baselines: list[FillSpec] = Field(default_factory=lambda: ["zero"], min_length=1)
    samples: Annotated[int, Field(ge=1, le=10_000)] = 20
    noise: Annotated[float, Field(ge=0)] = Field(
        0.1, description="Noise standard deviation as a fraction of the input's value range."
    )
    internal_batch_size: Annotated[int, Field(ge=1)] | None = None


# ---------------------------------------------------------------- CAM family


class GradCamParams(Params):
    """A CAM at one layer: Grad-CAM, Grad-CAM++, HiResCAM, XGrad-CAM."""

    layer: str = Field("auto", description="Module name, or 'auto': the features entering GAP.")
    relu: bool = Field(True, description="Keep only positive evidence, as published.")


class LayerCamParams(Params):
    """LayerCAM at one or several layers, fused into one map."""

    layers: list[str] = Field(
        default_factory=lambda: ["auto"],
        min_length=1,
        description="Module names (or 'auto'); several are fused into one map.",
    )
    fusion: Literal["mean", "max"] = Field(
        "mean",
        description="How several layers' maps, each divided by its maximum, are combined.",
    )

    @model_validator(mode="after")
    def _distinct(self) -> LayerCamParams:
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers must be distinct, got {self.layers}")
        return self


class AblationCamParams(Params):
    """Ablation-CAM: channel weights from one forward pass per channel, batched."""

    layer: str = Field("auto", description="Module name, or 'auto': the features entering GAP.")
    relu: bool = Field(True, description="Keep only positive evidence, as published.")


class ScoreCamParams(AblationCamParams):
    """Score-CAM: channel weights from the scores of inputs masked by each channel, batched."""

    # The paper masks images scaled to [0, 1], where 0 is black: background. In the model's
    # input space after z-scoring, 0 is the image mean, and 'min' is the background.
    baseline: FillSpec = Field(
        "min", description="What the masked-out part of the input becomes (default: background)."
    )


class EigenCamParams(Params):
    """EigenCAM: the first principal component of a layer's activations (class-agnostic)."""

    layer: str = Field("auto", description="Module name, or 'auto': the features entering GAP.")
    relu: bool = Field(True, description="Keep only the positive side of the component.")


class CamParams(Params):
    """CAM has no free parameter: it is defined on the features entering global pooling."""


# ---------------------------------------------------------------- LRP

Rule = Literal["epsilon", "gamma", "alpha_beta"]
LayerKind = Literal["conv", "linear", "batchnorm"]


class LrpParams(Params):
    """Rules per layer type: ``rule`` for convolutions and linear layers, unless ``rules`` names
    another; batch norm uses epsilon unless ``rules`` says otherwise, since a per-channel scale
    has only a positive or only a negative part and gamma or alpha-beta would scale relevance.
    """

    rule: Rule = "epsilon"
    rules: dict[LayerKind, Rule] = Field(
        default_factory=dict,
        description="Composite: a rule per layer type (conv, linear, batchnorm).",
    )
    epsilon: Annotated[float, Field(gt=0)] = 1e-6
    gamma: Annotated[float, Field(ge=0)] = 0.25
    alpha: Annotated[float, Field(ge=1)] = 2.0
    beta: Annotated[float, Field(ge=0)] = 1.0

    @model_validator(mode="after")
    def _conserving(self) -> LrpParams:
        if abs(self.alpha - self.beta - 1) > 1e-9:
            raise ValueError(
                f"alpha - beta must be 1 to conserve relevance, got {self.alpha} - {self.beta}"
            )
        return self

    def rule_for(self, kind: str) -> str:
        """The rule used for a layer kind."""
        default = "epsilon" if kind == "batchnorm" else self.rule
        return self.rules.get(kind, default)  # type: ignore[arg-type]


# ---------------------------------------------------------------- perturbation family


class OcclusionParams(Params):
    """A box slid over the volume; each position is replaced by the fill."""

    window: Size = Field(8, description="Box size in voxels: one number or one per axis (two: 2D).")
    stride: Size = Field(4, description="Step between boxes in voxels: one number or per axis.")
    baseline: FillSpec = Field(default_factory=BlurFill, description=FILL_DEFAULT)
    engine: Engine = Field("plain", description=ENGINE_DESCRIPTION)
    approximate: Approximate | None = Field(
        None, description="Opt-in approximations (projective threshold, refinement)."
    )


class GroupParams(Params):
    """Methods over feature groups."""

    grouping: GroupingSpec = Field(default_factory=GridGrouping)
    baseline: FillSpec = Field(default_factory=BlurFill, description=FILL_DEFAULT)


class FeatureAblationParams(GroupParams):
    """Feature ablation; with a grid grouping its groups are boxes, so the incremental engine
    applies."""

    engine: Engine = Field("plain", description=ENGINE_DESCRIPTION + " Grid groupings only.")


class ShapleyParams(GroupParams):
    """Shapley value sampling over random permutations of the groups."""

    samples: Annotated[int, Field(ge=1, le=100_000)] = Field(25, description="Permutations.")


class KernelShapParams(GroupParams):
    """KernelSHAP: coalitions drawn from the Shapley kernel, weighted least squares."""

    samples: Annotated[int, Field(ge=1, le=1_000_000)] = Field(256, description="Coalitions.")


class LimeParams(GroupParams):
    """LIME: uniform random coalitions, a locally weighted ridge model."""

    samples: Annotated[int, Field(ge=1, le=1_000_000)] = Field(256, description="Coalitions.")
    kernel_width: Annotated[float, Field(gt=0)] = Field(
        0.25, description="Width of exp(-d^2 / width^2), d the cosine distance to the input."
    )
    alpha: Annotated[float, Field(ge=0)] = Field(0.01, description="Ridge penalty.")
