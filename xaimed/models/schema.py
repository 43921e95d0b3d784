"""Config sections of the model formats in :mod:`xaimed.models` (pydantic only, no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from xaimed.config.base import Strict
from xaimed.config.paths import resolve_path


class NnunetSection(Strict):
    """An nnU-Net v2 results folder: plans, dataset.json and one checkpoint per fold."""

    folder: Path = Field(
        description="The trainer folder, e.g. "
        ".../Dataset123_X/nnUNetTrainer__nnUNetPlans__3d_fullres."
    )
    folds: list[Annotated[int, Field(ge=0)]] | Literal["all"] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4],
        description="Folds to ensemble (fold_<n> subfolders), or 'all' (the fold_all model).",
    )
    checkpoint: str = Field("checkpoint_final.pth", description="Checkpoint file in each fold.")
    mirroring: bool = Field(
        False, description="Test-time mirroring over the axes the trainer allows (slower)."
    )
    step_size: float = Field(
        0.5, gt=0, le=1, description="Sliding-window step as a fraction of the patch (nnU-Net's)."
    )

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: Path, info: ValidationInfo) -> Path:
        path = resolve_path(value, info)
        if (info.context or {}).get("check_files") and not path.is_dir():
            raise ValueError(f"folder {path} does not exist")
        return path

    @field_validator("folds")
    @classmethod
    def _distinct(cls, value: list[int] | str) -> list[int] | str:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError(f"folds must be distinct fold numbers or 'all', got {value}")
        return value

    def fold_names(self) -> list[str]:
        """Subfolder names of the members, in order."""
        if self.folds == "all":
            return ["fold_all"]
        return [f"fold_{f}" for f in self.folds]


class SlicewiseSection(Strict):
    """A 2D network run slice by slice (2.5D): neighbouring slices as channels."""

    axis: Literal["axial", "coronal", "sagittal"] = Field(
        description="World axis the volume is sliced along; resolved per case to an array axis "
        "from the model grid's orientation."
    )
    context: int = Field(
        0, ge=0, le=16,
        description="Neighbouring slices on each side given as extra channels (edges replicate).",
    )  # fmt: skip
    reduce: Literal["mean", "max"] = Field(
        "mean", description="2D classifiers: the volume's score is the mean or max over slices."
    )
