"""Settings of ``xaimed evaluate``: the ``evaluate`` section of a config, and the table of
metric kinds (:data:`METRICS`) it is built from.

Each kind of metric registers once in :data:`METRICS`: its settings section (a class below),
the columns it writes to metrics.csv and the module whose ``compute`` runs it (the
:class:`xaimed.evaluate.metric.Metric` protocol). ``EvaluateSection`` gets one field per entry,
and ``evaluate.metrics`` accepts exactly the registered kinds. The table lives here, beside the
settings, because config loading must stay free of torch: the modules are imported only when
their kind runs.

Paths (masks, checkpoints) resolve against the config file's folder during validation, so that
the run's saved config still finds them from the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, create_model, field_validator

from xaimed.config.base import PositiveInt, Strict
from xaimed.config.paths import resolve_path


class LocalisationSettings(Strict):
    """evaluate.localisation: maps against ground-truth masks."""

    tolerance_mm: float = Field(
        0.0, ge=0, description="Pointing game: a hit may lie this far (mm) outside the mask."
    )
    top_percent: float = Field(
        5.0, gt=0, le=100, description="Dice, IoU and Hausdorff use the top this % of voxels."
    )


class FaithfulnessSettings(Strict):
    """evaluate.faithfulness: deletion and insertion curves on the model's input grid."""

    steps: int = Field(50, ge=2, le=10_000, description="Points of each curve after the start.")
    baseline: Literal["zero", "min", "mean"] | float = Field(
        "min", description="What removed voxels become, in the model's input space."
    )
    group_size: PositiveInt = Field(
        1, description="Remove cubes of this edge (voxels) ranked by their mean attribution."
    )
    score: Literal["probability", "logit"] = "probability"


class SanitySettings(Strict):
    """evaluate.sanity: model- and data-randomisation tests."""

    methods: list[str] | None = Field(None, description="Method ids to test; unset: all.")
    spearman_threshold: float = Field(
        0.5, gt=-1, le=1, description="Pass when Spearman at full randomisation is below this."
    )
    absolute: bool = Field(True, description="Compare |map| (Adebayo et al.), else raw values.")
    layers: list[str] | None = Field(
        None, description="Cascade steps: compare after re-initialising down to these layers."
    )
    randomised_labels_checkpoint: Path | None = Field(
        None, description="Same architecture trained on shuffled labels: data-randomisation test."
    )

    @field_validator("randomised_labels_checkpoint")
    @classmethod
    def _resolve(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_path(value, info)


class RobustnessSettings(Strict):
    """evaluate.robustness: max-sensitivity under small uniform input noise."""

    methods: list[str] | None = Field(None, description="Method ids to test; unset: all.")
    samples: PositiveInt = 8
    radius: float = Field(
        0.02, gt=0, description="Noise drawn from [-r, r] times the input's value range."
    )


class AgreementSettings(Strict):
    """evaluate.agreement: between the methods of a case and between checkpoints."""

    checkpoints: list[Path] = Field(
        default_factory=list, description="Checkpoints of repeated training runs (same kind)."
    )

    @field_validator("checkpoints")
    @classmethod
    def _resolve(cls, value: list[Path], info: ValidationInfo) -> list[Path]:
        return [resolve_path(path, info) for path in value]


@dataclass(frozen=True)
class MetricKind:
    """One registered kind of metric: its settings section, the metrics.csv ``metric`` values it
    writes, and the module implementing :class:`xaimed.evaluate.metric.Metric`."""

    settings: type[Strict]
    columns: tuple[str, ...]
    module: str


# The one table of metric kinds, in the order they run (the key is the config section's name).
# Adding a kind: its module (with `compute`), its settings class above, and one line here.
METRICS: dict[str, MetricKind] = {
    "localisation": MetricKind(
        LocalisationSettings,
        ("pointing_game", "mass_inside", "auroc", "rank_accuracy", "dice_top", "iou_top",
         "hausdorff95_mm"),
        "xaimed.evaluate.localisation",
    ),
    "faithfulness": MetricKind(
        FaithfulnessSettings, ("deletion_auc", "insertion_auc"), "xaimed.evaluate.faithfulness"
    ),
    "sanity": MetricKind(
        SanitySettings,
        ("cascade_spearman", "cascade_ssim", "randomisation_spearman", "randomisation_ssim",
         "randomisation_verdict", "data_randomisation_spearman", "data_randomisation_ssim",
         "data_randomisation_verdict"),
        "xaimed.evaluate.sanity",
    ),
    "robustness": MetricKind(
        RobustnessSettings, ("max_sensitivity",), "xaimed.evaluate.robustness"
    ),
    "agreement": MetricKind(
        AgreementSettings,
        ("method_agreement_spearman", "checkpoint_agreement_spearman"),
        "xaimed.evaluate.agreement",
    ),
}  # fmt: skip

if TYPE_CHECKING:
    EvaluateMetric = str
else:
    EvaluateMetric = Literal[tuple(METRICS)]


class _EvaluateBase(Strict):
    """How `xaimed evaluate` judges the maps of an explain run."""

    masks: str | None = Field(
        None, description="Ground-truth mask per case, '{case_id}' filled in; none: no masks."
    )
    metrics: list[EvaluateMetric] = Field(
        default_factory=lambda: list(METRICS), description="Metric kinds to compute."
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the cohort intervals.")

    @field_validator("masks")
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Absolute from here on, so that the run's config.json still finds them from the run
        # folder; '{case_id}' survives, it is only a part of the name.
        return None if value is None else str(resolve_path(Path(value), info))

    def of(self, kind: str) -> Any:
        """The settings section of metric kind ``kind`` (``evaluate.<kind>``)."""
        return getattr(self, kind)


# One field per registered kind, each defaulting to its settings' defaults.
_fields: dict[str, Any] = {
    kind: (entry.settings, Field(default_factory=entry.settings)) for kind, entry in METRICS.items()
}
# Built from the table, so that registering a kind is the only edit; code reaches a kind's
# section by name (`section.of(kind)`), the kind's own module knows its type.
EvaluateSection: type[_EvaluateBase] = create_model(
    "EvaluateSection", __base__=_EvaluateBase, __module__=__name__, **_fields
)
EvaluateSection.__doc__ = _EvaluateBase.__doc__
