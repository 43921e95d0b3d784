"""Settings of ``xaimed evaluate``: the ``evaluate`` section of a config.

Paths (masks, checkpoints) resolve against the config file's folder during validation, so that
the run's saved config still finds them from the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from xaimed.config.base import PositiveInt, Strict
from xaimed.config.paths import resolve_path

EvaluateMetric = Literal["localisation", "faithfulness", "sanity", "robustness", "agreement"]


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


class EvaluateSection(Strict):
    """How `xaimed evaluate` judges the maps of an explain run."""

    masks: str | None = Field(
        None, description="Ground-truth mask per case, '{case_id}' filled in; none: no masks."
    )
    metrics: list[EvaluateMetric] = Field(
        default_factory=lambda: ["localisation", "faithfulness", "sanity", "robustness",
                                 "agreement"],
    )  # fmt: skip
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the cohort intervals.")
    localisation: LocalisationSettings = Field(default_factory=LocalisationSettings)
    faithfulness: FaithfulnessSettings = Field(default_factory=FaithfulnessSettings)
    sanity: SanitySettings = Field(default_factory=SanitySettings)
    robustness: RobustnessSettings = Field(default_factory=RobustnessSettings)
    agreement: AgreementSettings = Field(default_factory=AgreementSettings)

    @field_validator("masks")
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Absolute from here on, so that the run's config.json still finds them from the run
        # folder; '{case_id}' survives, it is only a part of the name.
        return None if value is None else str(resolve_path(Path(value), info))
