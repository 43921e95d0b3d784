"""The run configuration's schema: pydantic models validated completely at load.

Every section forbids unknown keys (a typo must not silently fall back to a default) and is
frozen once validated. Method names and parameters are checked against the method registry's
specifications, devices and every choice here, so a Config that exists is a Config that can be
run; one ``xaimed validate`` reports every problem at once (see :mod:`xaimed.config.problems`).
Relative paths resolve against the folder of the config file during validation
(:mod:`xaimed.config.paths`); reading YAML is :mod:`xaimed.config.loading`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from xaimed.config.base import PositiveInt, Regex, Strict
from xaimed.config.paths import base_dir_of, resolve_path
from xaimed.config.problems import NESTED, render, suggest
from xaimed.evaluate.settings import EvaluateSection
from xaimed.methods import registry
from xaimed.models.labels import nnunet_target_problems
from xaimed.models.schema import NnunetSection, SlicewiseSection
from xaimed.pacs.settings import PacsSection, StoreSettings
from xaimed.units import parse_bytes

Vec3 = tuple[float, float, float]
Size3 = tuple[int, int, int]


class ModelSection(Strict):
    """How to load the model and what its outputs mean."""

    torchscript: Path | None = Field(None, description="TorchScript file (torch.jit.save).")
    architecture: str | None = Field(
        None, description="Import path 'package.module:Class' of an nn.Module (MONAI included)."
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for it.")
    weights: Path | None = Field(
        None, description="State dict file, loaded with weights_only=True."
    )
    python_path: list[Path] = Field(
        default_factory=list, description="Folders added to the import path for `architecture`."
    )
    allow_pickle: bool = Field(
        False, description="Allow `weights` to be a pickled whole model (runs code from the file)."
    )
    # Declared before input_size: its validator reads spatial_dims.
    spatial_dims: Literal[2, 3] = Field(
        3,
        description="2: the network takes 2D images (N, C, X, Y); cases are one plane (X, Y, 1).",
    )
    input_size: Size3 | None = Field(
        None, description="Spatial size the model expects, if fixed (2D models: X, Y)."
    )
    in_channels: PositiveInt = 1
    classes: list[str] | None = Field(None, description="Class names, in output order.")
    output: Literal["logits", "probabilities"] = "logits"
    ensemble: list[ModelSection] | None = Field(
        None, description="Members (each a model section) whose mean output is explained."
    )
    nnunet: NnunetSection | None = Field(None, description="An nnU-Net v2 results folder.")
    monai_bundle: Path | None = Field(None, description="A MONAI bundle's root folder.")
    slicewise: SlicewiseSection | None = Field(
        None, description="The model is a 2D network run slice by slice (2.5D)."
    )

    @field_validator("architecture")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+:[\w.]+", value):
            raise ValueError(f"expected 'package.module:Class', got {value!r}")
        return value

    @field_validator("input_size", mode="before")
    @classmethod
    def _plane_size(cls, value: Any, info: ValidationInfo) -> Any:
        # A 2D model's size is given as (X, Y); inside xaimed a plane is (X, Y, 1).
        two_d = info.data.get("spatial_dims") == 2
        if isinstance(value, list | tuple) and len(value) == 2:
            if not two_d:
                raise ValueError(
                    f"{list(value)} has two numbers; a 3D model needs three, or set "
                    "model.spatial_dims: 2 for a 2D model"
                )
            return (*value, 1)
        if two_d and isinstance(value, list | tuple) and len(value) == 3 and value[2] != 1:
            raise ValueError(
                f"{list(value)} is not a plane; a 2D model (model.spatial_dims: 2) takes X, Y"
            )
        return value

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, value: Size3 | None) -> Size3 | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"every size must be at least 1, got {list(value)}")
        return value

    @field_validator("torchscript", "weights")
    @classmethod
    def _model_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = resolve_path(value, info)
        # Loading checks the files; a config built in code (no context) may name files that
        # are made later.
        if (info.context or {}).get("check_files") and not path.is_file():
            raise ValueError(f"file {path} does not exist")
        return path

    @field_validator("python_path")
    @classmethod
    def _folders(cls, value: list[Path], info: ValidationInfo) -> list[Path]:
        return [resolve_path(path, info) for path in value]

    @field_validator("monai_bundle")
    @classmethod
    def _bundle(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = resolve_path(value, info)
        if (info.context or {}).get("check_files") and not path.is_dir():
            raise ValueError(f"folder {path} does not exist")
        return path

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        formats = [
            k for k in ("ensemble", "nnunet", "monai_bundle") if getattr(self, k) is not None
        ]
        if formats and self.slicewise is not None:
            raise ValueError(
                f"`slicewise` wraps a 2D network given by `torchscript` or `architecture` + "
                f"`weights`, not `{formats[0]}`; remove one of them"
            )
        if formats:
            if len(formats) > 1 or self.torchscript is not None or self.weights is not None:
                raise ValueError(f"give one model source: `{formats[0]}` excludes the others")
            if self.ensemble is not None and len(self.ensemble) < 2:
                raise ValueError("`ensemble` needs at least two members")
            return self
        if self.torchscript is not None and (self.architecture or self.weights):
            raise ValueError("give either `torchscript` or `architecture` + `weights`, not both")
        if self.torchscript is None and self.weights is None:
            raise ValueError("no model given: set `torchscript`, or `architecture` and `weights`")
        if self.weights is not None and self.architecture is None and not self.allow_pickle:
            raise ValueError("`weights` needs `architecture` (the class the state dict belongs to)")
        return self

    @model_validator(mode="after")
    def _allowed_architecture(self, info: ValidationInfo) -> ModelSection:
        # Loading checks the class (importing torch only here, for configs that name one); a
        # config built in code is checked when the model is built.
        if self.architecture is not None and (info.context or {}).get("check_files"):
            from xaimed.architecture import import_architecture

            try:
                import_architecture(self.architecture, self.python_path)
            except ValueError as exc:
                raise PydanticCustomError(
                    NESTED, "architecture refused", {"problems": [f"architecture: {exc}"]}
                ) from None
        return self


# Case-list columns every list may have; a channel may not take one of their names.
CASE_LIST_COLUMNS = ("case_id", "path", "study_uid", "mask", "label")
# Endings of other outputs' file names next to a map (<stem>_member_std, <stem>_dominant, ...).
OUTPUT_SUFFIXES = ("member_std", "dominant", "pm", "sc")


class ChannelsStep(Strict):
    """How the source's channels become the model's input channels.

    ``source: columns`` reads one file per channel from the case list's columns ``names`` (e.g.
    T1, T1ce, T2, FLAIR) and stacks them in that order; the list shorthand
    ``channels: [t1, t1ce, t2, flair]`` means exactly that. ``last_axis`` takes the channels of
    a 4D file, named by ``names`` when given (their count is checked when a case is read).
    """

    source: Literal["single", "last_axis", "columns"] = Field(
        "single",
        description="'single': a 3D volume; 'last_axis': a 4D volume, channels last; "
        "'columns': one file per channel, from the case list's columns `names`.",
    )
    names: tuple[str, ...] | None = Field(
        None,
        description="Channel names, in the model's channel order: case-list columns for "
        "'columns', names of the 4th axis's channels for 'last_axis'; used in file names.",
    )
    resample_to: str | None = Field(
        None,
        description="'columns': resample every other channel linearly onto this channel's "
        "grid; unset: the channels' files must share one grid.",
    )
    repeat: PositiveInt = Field(1, description="Repeat each channel this many times.")
    reduce_map: Literal["sum", "mean"] = Field(
        "sum", description="How per-channel attributions combine into one map on the source."
    )

    @property
    def columns(self) -> tuple[str, ...] | None:
        """The case-list image columns of a multi-sequence run (source 'columns'), else None."""
        return self.names if self.source == "columns" else None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `channels: [t1, t1ce]` names case-list columns; `names:` without `source:` does too.
        if isinstance(value, list | tuple):
            return {"source": "columns", "names": value}
        if isinstance(value, dict) and "names" in value and "source" not in value:
            return {**value, "source": "columns"}
        return value

    @field_validator("names")
    @classmethod
    def _names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("give at least one channel name")
        bad = [n for n in value if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", n)]
        if bad:
            raise ValueError(
                f"channel names are used in file names and may hold letters, digits, '_' and "
                f"'-' only, got {bad}"
            )
        lowered = [n.lower() for n in value]
        repeated = sorted({n for n in value if lowered.count(n.lower()) > 1})
        if repeated:
            raise ValueError(f"channel name(s) {repeated} appear twice (case-insensitively)")
        reserved = [n for n in value if n.lower() in CASE_LIST_COLUMNS]
        if reserved:
            raise ValueError(
                f"channel name(s) {reserved} are case-list columns of their own "
                f"({', '.join(CASE_LIST_COLUMNS)}); rename the image column(s)"
            )
        # A channel's map is <case>_<method>_<channel>: these names end other outputs' files.
        clashing = [n for n in value if n.lower() in OUTPUT_SUFFIXES]
        if clashing:
            raise ValueError(
                f"channel name(s) {clashing} would give per-channel maps the names of other "
                f"outputs ({', '.join(OUTPUT_SUFFIXES)}); rename the channel(s)"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ChannelsStep:
        if self.source == "columns" and self.names is None:
            raise ValueError("source 'columns' needs `names`, the case list's image columns")
        if self.source == "single" and self.names is not None:
            raise ValueError(
                "`names` needs source 'columns' (one file per channel) or 'last_axis' (a 4D file)"
            )
        if self.resample_to is not None:
            if self.source != "columns":
                raise ValueError("`resample_to` needs source 'columns' (one file per channel)")
            if self.resample_to not in (self.names or ()):
                hint = suggest(self.resample_to, list(self.names or ()))
                raise ValueError(
                    f"resample_to {self.resample_to!r} is not one of the channel names "
                    f"{list(self.names or ())}{hint}"
                )
        return self


class ResampleStep(Strict):
    """Resample to a voxel spacing (mm) before the model; maps are resampled back."""

    spacing: Vec3
    order: Annotated[int, Field(ge=0, le=3)] = 1

    @field_validator("spacing")
    @classmethod
    def _positive(cls, value: Vec3) -> Vec3:
        if min(value) <= 0:
            raise ValueError(f"spacing must be positive, got {list(value)}")
        return value


class IntensityStep(Strict):
    """Intensity normalisation (does not move voxels, so maps need no inverse for it)."""

    kind: Literal["window", "zscore", "percentile"]
    level: float | None = Field(None, description="window: centre (e.g. 40 HU).")
    width: float | None = Field(None, description="window: width (e.g. 400 HU).")
    nonzero: bool = Field(False, description="zscore: statistics over non-zero voxels only.")
    low: float = Field(0.5, ge=0, le=100, description="percentile: mapped to 0.")
    high: float = Field(99.5, ge=0, le=100, description="percentile: mapped to 1.")
    clip: bool = Field(True, description="window/percentile: clip to [0, 1].")

    @model_validator(mode="after")
    def _parameters(self) -> IntensityStep:
        if self.kind == "window" and (self.level is None or self.width is None or self.width <= 0):
            raise ValueError("window needs `level` and a positive `width`")
        if self.kind == "percentile" and self.low >= self.high:
            raise ValueError(f"percentile needs low < high, got {self.low} >= {self.high}")
        return self


class CropPadStep(Strict):
    """Centre crop or pad each axis to a size; maps are padded / cropped back."""

    size: Size3 | Literal["model"] = Field("model", description="'model': model.input_size.")
    pad_value: float | Literal["min"] = Field("min", description="Value of padded voxels.")


class ResizeStep(Strict):
    """Resample the whole volume to a fixed shape (models that take one size); maps go back."""

    size: Size3 | Literal["model"] = Field("model", description="'model': model.input_size.")
    mode: Literal["nearest", "linear", "area"] = Field(
        "linear", description="Interpolation the model was trained with."
    )


class PreprocessingSection(Strict):
    """Steps applied in this order: channels, reorient, resample, intensity, crop_pad, resize."""

    nan_fill: float | None = Field(
        None, description="Replace NaN voxels with this value; unset: NaNs are an error."
    )
    channels: ChannelsStep = Field(default_factory=ChannelsStep)
    reorient: str | None = Field(None, description="Axis codes to reorient to, e.g. 'RAS'.")
    resample: ResampleStep | None = None
    intensity: IntensityStep | None = None
    crop_pad: CropPadStep | None = None
    resize: ResizeStep | None = None

    @field_validator("reorient")
    @classmethod
    def _axcodes(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.upper()
        axis_of = {"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}
        if len(code) != 3 or sorted(axis_of.get(c, -1) for c in code) != [0, 1, 2]:
            raise ValueError(f"expected three axis codes like 'RAS' or 'LPS', got {value!r}")
        return code


class TargetSection(Strict):
    """What output of the model is explained."""

    class_: int | str = Field(
        "predicted",
        alias="class",
        description="'predicted', 'all', a class index or a class name.",
    )
    # Segmentation outputs (a map per voxel): the explained scalar is one label's output
    # reduced over a region.
    region: Literal["predicted", "mask", "volume"] = Field(
        "predicted",
        description="Segmentation: the label's predicted region, a mask file, or every voxel.",
    )
    mask: str | None = Field(
        None,
        description="Segmentation: mask NIfTI on the source grid; '{case_id}' is filled in. "
        "A case list's mask column, where given, replaces it for that case.",
    )
    reduction: Literal["sum", "mean"] = "sum"
    score: Literal["logits", "probabilities"] = Field(
        "logits", description="Segmentation: reduce the raw outputs or their probabilities."
    )

    @model_validator(mode="after")
    def _mask_given(self) -> TargetSection:
        if self.region == "mask" and not self.mask:
            raise ValueError(
                "target.region is 'mask' but target.mask (a NIfTI path) is unset; set it (a "
                "case list's mask column then replaces it where given)"
            )
        return self


class TilingSection(Strict):
    """Sliding-window inference for fully convolutional models on volumes larger than a patch."""

    patch_size: Size3 = Field(description="Patch the model runs on, in voxels.")
    overlap: float = Field(0.5, ge=0, lt=1, description="Fraction of a patch shared with the next.")
    blend: Literal["gaussian", "constant"] = Field(
        "gaussian", description="Weighting of overlapping patches."
    )

    @field_validator("patch_size")
    @classmethod
    def _positive_patch(cls, value: Size3) -> Size3:
        if min(value) < 1:
            raise ValueError(f"every size must be at least 1, got {list(value)}")
        return value


class PostProcess(Strict):
    """Explicit, recorded post-processing of a raw map (none by default)."""

    abs: bool = False
    clip_percentile: float | None = Field(
        None, gt=0, le=100, description="Clip |values| at this percentile of |map|."
    )
    normalize: Literal["none", "max_abs", "minmax"] = "none"


class MethodEntry(Strict):
    """One method to run: its registry name, an optional output id, parameters."""

    name: str
    id: str | None = Field(None, description="Name used in output files; default: `name`.")
    params: dict[str, Any] = Field(default_factory=dict)
    postprocess: PostProcess = Field(default_factory=PostProcess)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    # The parameters validated by the method's model (defaults filled in); ``params`` keeps
    # what the config said, which is what completion records and the config hash cover.
    _settings: BaseModel | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if registry.find(value) is None:
            raise ValueError(f"unknown method {value!r}{suggest(value, registry.names())} "
                             "(`xaimed methods` lists them)")  # fmt: skip
        return value

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", value):
            raise ValueError(f"id may hold letters, digits, '_' and '-' only, got {value!r}")
        return value

    @model_validator(mode="after")
    def _valid_params(self) -> MethodEntry:
        info = registry.find(self.name)
        if info is None:  # unreachable: the name validator refused it
            raise RuntimeError(f"method {self.name!r} passed validation but is not registered")
        try:
            self._settings = info.params_model.model_validate(self.params)
        except ValidationError as exc:
            # Carried as a list so that each parameter's problem is its own line, with its path.
            raise PydanticCustomError(
                NESTED,
                "invalid parameters",
                {"problems": render(exc, info.params_model, prefix="params.")},
            ) from None
        return self

    @property
    def output_id(self) -> str:
        """The id used in file names and the manifest."""
        return self.id or self.name

    @property
    def settings(self) -> Any:
        """The method's parameters as validated by its parameter model (defaults filled in)."""
        if self._settings is None:
            raise RuntimeError("MethodEntry.settings read before validation")
        return self._settings


class OverlaySection(Strict):
    """How Secondary Captures colour the map over the windowed source slice."""

    colormap: str = Field("inferno", description="Matplotlib colour map for non-negative maps.")
    diverging_colormap: str = Field("RdBu_r", description="Colour map for signed maps.")
    opacity: float = Field(0.5, ge=0, le=1, description="Opacity of the coloured map.")
    threshold: float = Field(
        0.1, ge=0, le=1, description="Leave voxels below this fraction of max |map| uncoloured."
    )
    legend: bool = Field(True, description="Draw a small colour bar in the corner.")

    @field_validator("colormap", "diverging_colormap")
    @classmethod
    def _known_colormap(cls, value: str) -> str:
        from matplotlib import colormaps

        if value not in colormaps:
            raise ValueError(f"unknown colour map {value!r}{suggest(value, list(colormaps))}")
        return value


class OutputsSection(Strict):
    """Which files to write per case and method (a JSON sidecar is always written)."""

    nifti: bool = Field(True, description="Write the map as a volume, in the format `format`.")
    format: Literal["nifti", "nrrd", "mha", "same"] = Field(
        "nifti",
        description="File format of map volumes: nifti (.nii.gz), nrrd (.nrrd), mha (MetaImage "
        ".mha) or same (the input's format; NIfTI for DICOM inputs).",
    )
    png: bool = True
    compress: bool = Field(
        True, description="Compress map volumes (.nii.gz rather than .nii; NRRD/MHA: zlib)."
    )
    parametric_map: bool = Field(True, description="DICOM inputs: a DICOM Parametric Map.")
    secondary_capture: bool = Field(
        True, description="DICOM inputs: RGB Secondary Captures, one per source slice."
    )
    overlay: OverlaySection = Field(default_factory=OverlaySection)
    store: StoreSettings | None = Field(
        None, description="DICOM inputs: store the derived series into the source study."
    )
    report: bool = Field(
        True, description="Write the HTML report (RUN/report/index.html) at the end of the run."
    )


class ReportSection(Strict):
    """The HTML report (``xaimed report``; written by explain, refreshed by merge/evaluate)."""

    identifiers: bool = Field(
        False,
        description="Show source paths and DICOM identifiers; off: no patient names, IDs, "
        "birth dates or source paths in the report.",
    )
    max_size: int = Field(
        128, ge=16, le=1024,
        description="Largest viewer volume along an axis, in voxels; larger volumes are shown "
        "subsampled by a whole stride (recorded on the case page).",
    )  # fmt: skip


class DicomSelect(Strict):
    """Which series of a DICOM study is explained: the largest 3D volume among the matches."""

    modality: str | None = Field(None, description="e.g. 'CT' or 'MR'; unset: any.")
    description: Regex | None = Field(
        None, description="Regular expression searched in Series Description (case-insensitive)."
    )


class DicomSection(Strict):
    """How DICOM studies are read."""

    select: DicomSelect = Field(default_factory=DicomSelect)
    min_slices: PositiveInt = Field(
        3, description="Refuse 3D series with fewer slices (a single slice is read as 2D)."
    )
    resample_irregular: bool = Field(
        False, description="Resample series with inconsistent slice spacing instead of refusing."
    )
    voi_lut: Literal["apply", "display"] = Field(
        "apply",
        description="Radiographs (CR, DX, MG, IO): 'apply' the image's first VOI LUT (window) to "
        "the values the model sees, as a viewer shows them and as exported training images "
        "were made; 'display': the model sees the Modality LUT output and the window only sets "
        "the grey window of the overlays.",
    )


class RuntimeSection(Strict):
    """Where and how to compute."""

    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = 0
    memory_budget: str | int | None = Field(
        None, description="Bytes or '2GB', '512MiB'; unset: what the device has free."
    )
    batch_size: PositiveInt | None = Field(None, description="Fix the batch size of passes.")
    threads: PositiveInt | None = Field(None, description="CPU threads for torch.")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")
        return value

    @field_validator("memory_budget")
    @classmethod
    def _budget(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_bytes(value)
        return value

    @property
    def memory_budget_bytes(self) -> int | None:
        """The memory budget in bytes, or None when unset."""
        return None if self.memory_budget is None else parse_bytes(self.memory_budget)


def _two_number_sizes(params: Any, prefix: str = "") -> list[str]:
    """Where method parameters give a box size (window, stride, size) as two numbers (2D)."""
    found: list[str] = []
    if isinstance(params, dict):
        for key, value in params.items():
            where = f"{prefix}{key}"
            if key in ("window", "stride", "size") and isinstance(value, list | tuple):
                if len(value) == 2:
                    found.append(where)
            else:
                found.extend(_two_number_sizes(value, f"{where}."))
    return found


class Config(Strict):
    """A whole xaimed run configuration."""

    model: ModelSection
    preprocessing: PreprocessingSection = Field(default_factory=PreprocessingSection)
    target: TargetSection = Field(default_factory=TargetSection)
    methods: list[MethodEntry] = Field(min_length=1)
    outputs: OutputsSection = Field(default_factory=OutputsSection)
    runtime: RuntimeSection = Field(default_factory=RuntimeSection)
    dicom: DicomSection = Field(default_factory=DicomSection)
    tiling: TilingSection | None = None
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    pacs: PacsSection | None = None
    report: ReportSection = Field(default_factory=ReportSection)
    # Folder of the config file: per-case paths in method parameters resolve against it.
    _base_dir: Path | None = PrivateAttr(None)

    @property
    def base_dir(self) -> Path | None:
        """Folder relative per-case paths start from (the config file's), if known."""
        return self._base_dir

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Config:
        self._base_dir = base_dir_of(info)
        ids = [m.output_id for m in self.methods]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"methods: the id(s) {dupes} appear twice; give each entry an `id`")
        crop = self.preprocessing.crop_pad
        if crop is not None and crop.size == "model" and self.model.input_size is None:
            raise ValueError("preprocessing.crop_pad.size is 'model' but model.input_size is unset")
        size = self.preprocessing.resize
        if size is not None and size.size == "model" and self.model.input_size is None:
            raise ValueError("preprocessing.resize.size is 'model' but model.input_size is unset")
        channels = self.preprocessing.channels
        if channels.names is not None and not (self.model.nnunet or self.model.monai_bundle):
            wanted = len(channels.names) * channels.repeat
            if wanted != self.model.in_channels:
                raise ValueError(
                    f"preprocessing.channels names {len(channels.names)} channel(s) (x repeat "
                    f"{channels.repeat}) but model.in_channels is {self.model.in_channels}; "
                    "make them agree"
                )
        self._check_slicewise()
        if self.model.spatial_dims == 3:
            planar = [
                f"methods[{i}].params.{where}"
                for i, entry in enumerate(self.methods)
                for where in _two_number_sizes(entry.settings.model_dump())
            ]
            if planar:
                raise ValueError(
                    f"{planar[0]} has two numbers, which only a 2D model takes; give three "
                    "(or one), or set model.spatial_dims: 2"
                )
        own = "nnunet" if self.model.nnunet else "monai_bundle" if self.model.monai_bundle else None
        if own and (self.tiling is not None or self.preprocessing != PreprocessingSection()):
            raise ValueError(
                f"model.{own} brings its own preprocessing and inference; remove the "
                "`preprocessing` and `tiling` sections"
            )
        target = self.target.class_
        # nnU-Net's label names are in its dataset.json, checked with the folder below.
        if isinstance(target, str) and target not in ("predicted", "all") and not self.model.nnunet:
            names = self.model.classes or []
            if target not in names:
                hint = suggest(target, names)
                raise ValueError(
                    f"target.class {target!r} is not 'predicted', 'all', an index or one of "
                    f"model.classes {names}{hint}"
                )
        if self.model.nnunet is not None and (info.context or {}).get("check_files"):
            problems = nnunet_target_problems(self.model.nnunet.folder, target)
            if problems:
                raise PydanticCustomError(NESTED, "nnU-Net labels", {"problems": problems})
        store = self.outputs.store
        if store is not None and store.server == "source" and self.pacs is None:
            raise ValueError(
                "outputs.store.server is 'source' but there is no pacs section; give "
                "pacs.server or a server under outputs.store.server"
            )
        return self

    def _check_slicewise(self) -> None:
        sliced = self.model.slicewise is not None or any(
            member.slicewise is not None for member in self.model.ensemble or []
        )
        if not sliced:
            return
        if self.model.spatial_dims == 2:
            raise ValueError(
                "model.slicewise runs a 2D network over the slices of a 3D volume; remove "
                "model.spatial_dims: 2 (it is for models of 2D images)"
            )
        if self.tiling is not None:
            raise ValueError(
                "model.slicewise runs a 2D network slice by slice and cannot be tiled; remove "
                "the `tiling` section"
            )
        for entry in self.methods:
            info = registry.method(entry.name)
            # CAMs read one layer's activations of one forward; a slice-wise model's 2D layers
            # run once per batch of slices, and Captum's DeepLift keeps one input per layer.
            if info.family == "cam" or entry.name == "deeplift":
                raise ValueError(
                    f"methods: {entry.name} cannot explain a slice-wise model (model.slicewise): "
                    "its 2D layers run once per batch of slices; use a gradient or perturbation "
                    "method"
                )

    def config_hash(self) -> str:
        """SHA-256 of the validated config (defaults included), stable across key order."""
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()
