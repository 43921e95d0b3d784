"""The run configuration: YAML read with a safe loader, validated by pydantic models.

Every section forbids unknown keys (a typo must not silently fall back to a default); the error
names the key path and suggests the nearest valid key. Relative paths resolve against the folder
of the config file. Method parameters are validated against the method registry, so one
``xaimed validate`` reports every problem in a config at once.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from xaimed.errors import ConfigError

Vec3 = tuple[float, float, float]
Size3 = tuple[int, int, int]
PositiveInt = Annotated[int, Field(ge=1)]


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


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
    input_size: Size3 | None = Field(None, description="Spatial size the model expects, if fixed.")
    in_channels: PositiveInt = 1
    classes: list[str] | None = Field(None, description="Class names, in output order.")
    output: Literal["logits", "probabilities"] = "logits"

    @field_validator("architecture")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+:[\w.]+", value):
            raise ValueError(f"expected 'package.module:Class', got {value!r}")
        return value

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, value: Size3 | None) -> Size3 | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"every size must be at least 1, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if self.torchscript is not None and (self.architecture or self.weights):
            raise ValueError("give either `torchscript` or `architecture` + `weights`, not both")
        if self.torchscript is None and self.weights is None:
            raise ValueError("no model given: set `torchscript`, or `architecture` and `weights`")
        if self.weights is not None and self.architecture is None and not self.allow_pickle:
            raise ValueError("`weights` needs `architecture` (the class the state dict belongs to)")
        return self


class ChannelsStep(Strict):
    """How the source's channels become the model's input channels."""

    source: Literal["single", "last_axis"] = Field(
        "single", description="'single': a 3D volume; 'last_axis': a 4D volume, channels last."
    )
    repeat: PositiveInt = Field(1, description="Repeat each channel this many times.")
    reduce_map: Literal["sum", "mean"] = Field(
        "sum", description="How per-channel attributions combine into one map on the source."
    )


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


class PreprocessingSection(Strict):
    """Steps applied in this order: channels, reorient, resample, intensity, crop_pad."""

    nan_fill: float | None = Field(
        None, description="Replace NaN voxels with this value; unset: NaNs are an error."
    )
    channels: ChannelsStep = Field(default_factory=ChannelsStep)
    reorient: str | None = Field(None, description="Axis codes to reorient to, e.g. 'RAS'.")
    resample: ResampleStep | None = None
    intensity: IntensityStep | None = None
    crop_pad: CropPadStep | None = None

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

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", value):
            raise ValueError(f"id may hold letters, digits, '_' and '-' only, got {value!r}")
        return value

    @property
    def output_id(self) -> str:
        """The id used in file names and the manifest."""
        return self.id or self.name


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
            raise ValueError(f"unknown colour map {value!r}{_suggest(value, list(colormaps))}")
        return value


class OutputsSection(Strict):
    """Which files to write per case and method (a JSON sidecar is always written)."""

    nifti: bool = True
    png: bool = True
    compress: bool = Field(True, description="Write .nii.gz rather than .nii.")
    parametric_map: bool = Field(True, description="DICOM inputs: a DICOM Parametric Map.")
    secondary_capture: bool = Field(
        True, description="DICOM inputs: RGB Secondary Captures, one per source slice."
    )
    overlay: OverlaySection = Field(default_factory=OverlaySection)
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
    description: str | None = Field(
        None, description="Regular expression searched in Series Description (case-insensitive)."
    )

    @field_validator("description")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class DicomSection(Strict):
    """How DICOM studies are read."""

    select: DicomSelect = Field(default_factory=DicomSelect)
    min_slices: PositiveInt = Field(
        3, description="Refuse 3D series with fewer slices (a single slice is read as 2D)."
    )
    resample_irregular: bool = Field(
        False, description="Resample series with inconsistent slice spacing instead of refusing."
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
    report: ReportSection = Field(default_factory=ReportSection)
    # Folder of the config file: per-case paths in method parameters resolve against it.
    _base_dir: Path | None = PrivateAttr(None)

    @property
    def base_dir(self) -> Path | None:
        """Folder relative per-case paths start from (the config file's), if known."""
        return self._base_dir

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        ids = [m.output_id for m in self.methods]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"methods: the id(s) {dupes} appear twice; give each entry an `id`")
        crop = self.preprocessing.crop_pad
        if crop is not None and crop.size == "model" and self.model.input_size is None:
            raise ValueError("preprocessing.crop_pad.size is 'model' but model.input_size is unset")
        target = self.target.class_
        if isinstance(target, str) and target not in ("predicted", "all"):
            names = self.model.classes or []
            if target not in names:
                hint = _suggest(target, names)
                raise ValueError(
                    f"target.class {target!r} is not 'predicted', 'all', an index or one of "
                    f"model.classes {names}{hint}"
                )
        return self

    def config_hash(self) -> str:
        """SHA-256 of the validated config (defaults included), stable across key order."""
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


def parse_bytes(value: str | int) -> int:
    """Parse ``2GB``, ``512MiB`` or a number of bytes."""
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"memory budget must be positive, got {value}")
        return value
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"expected a size like '2GB' or '512MiB', got {value!r}")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError(f"memory budget must be positive, got {value!r}")
    return size


def _suggest(word: str, candidates: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic model classes inside an annotation (through Optional, list, unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, list, tuple, Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _fields_at(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """Valid key names of the section that ``loc`` (minus its last key) points into."""
    models: list[type[BaseModel]] = [root]
    for key in loc[:-1]:
        if isinstance(key, int):
            continue
        nxt: list[type[BaseModel]] = []
        for model in models:
            for name, info in model.model_fields.items():
                if key in (name, info.alias):
                    nxt += _models_in(info.annotation)
        models = nxt or models
    return [info.alias or name for model in models for name, info in model.model_fields.items()]


def format_loc(loc: tuple[Any, ...]) -> str:
    """``('methods', 0, 'params')`` -> ``methods[0].params``."""
    out = ""
    for key in loc:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += f".{key}" if out else str(key)
    return out or "(top level)"


def _problems(error: ValidationError, root: type[BaseModel]) -> list[str]:
    problems = []
    for err in error.errors():
        # Pydantic appends the union member or validator tag to the location; users never
        # typed those, so drop them.
        loc = tuple(
            k
            for k in err["loc"]
            if not (isinstance(k, str) and k.startswith(("function-", "literal[")))
        )
        loc = tuple(k for k in loc if k not in ("str", "int", "float", "constrained-str"))
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            problems.append(
                f"{format_loc(loc)}: unknown key {key!r}{_suggest(key, _fields_at(loc, root))}"
            )
            continue
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{format_loc(loc)}: {message}")
    return sorted(set(problems), key=problems.index)


def _method_problems(config: Config) -> list[str]:
    from xaimed.methods import registry

    problems = []
    for i, entry in enumerate(config.methods):
        info = registry.find(entry.name)
        if info is None:
            problems.append(
                f"methods[{i}].name: unknown method {entry.name!r}"
                f"{_suggest(entry.name, registry.names())}; `xaimed methods` lists them"
            )
            continue
        try:
            info.params_model.model_validate(entry.params)
        except ValidationError as exc:
            problems += [f"methods[{i}].params.{p}" for p in _problems(exc, info.params_model)]
    return problems


def _resolve(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _file_problems(model: ModelSection) -> list[str]:
    problems = []
    for key in ("torchscript", "weights"):
        path = getattr(model, key)
        if path is not None and not path.is_file():
            problems.append(f"model.{key}: file {path} does not exist")
    return problems


def _resolve_model_paths(model: ModelSection, base_dir: Path) -> None:
    model.torchscript = model.torchscript and _resolve(model.torchscript, base_dir)
    model.weights = model.weights and _resolve(model.weights, base_dir)
    model.python_path = [_resolve(p, base_dir) for p in model.python_path]


def _resolve_evaluate_paths(section: EvaluateSection, base_dir: Path) -> None:
    # Absolute from here on, so that the run's config.json still finds them from the run folder.
    if section.masks is not None:
        section.masks = str(_resolve(Path(section.masks), base_dir))
    checkpoint = section.sanity.randomised_labels_checkpoint
    section.sanity.randomised_labels_checkpoint = checkpoint and _resolve(checkpoint, base_dir)
    section.agreement.checkpoints = [_resolve(p, base_dir) for p in section.agreement.checkpoints]


def _section_problems(data: dict[str, Any], base_dir: Path, check_files: bool) -> list[str]:
    """Problems of the model files and method parameters, found section by section.

    Used when the config as a whole does not validate, so that one `xaimed validate` still
    shows everything, not only the first layer of errors.
    """
    problems = []
    methods = data.get("methods")
    if isinstance(methods, list):
        try:
            entries = [MethodEntry.model_validate(m) for m in methods]
            problems += _method_problems(Config.model_construct(methods=entries))  # type: ignore[call-arg]
        except ValidationError:
            pass  # already reported by the whole-config validation
    if check_files:
        raw = data.get("model")
        known = ModelSection.model_fields
        try:
            # Unknown keys are reported already; leave them out to still check the files.
            model = ModelSection.model_validate(
                {k: v for k, v in raw.items() if k in known} if isinstance(raw, dict) else raw
            )
        except ValidationError:
            return problems
        _resolve_model_paths(model, base_dir)
        problems += _file_problems(model)
    return problems


def parse_config(data: Any, base_dir: Path, *, check_files: bool = True) -> Config:
    """Validate a config mapping; relative paths resolve against ``base_dir``.

    Raises ConfigError listing every problem, each prefixed with its key path.
    """
    if not isinstance(data, dict):
        raise ConfigError("the config must be a YAML mapping with the sections model, methods, …")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc, Config) + _section_problems(data, base_dir, check_files)
        raise ConfigError(f"invalid config: {len(problems)} problem(s)", problems) from None
    _resolve_model_paths(config.model, base_dir)
    _resolve_evaluate_paths(config.evaluate, base_dir)
    config._base_dir = base_dir
    problems = _method_problems(config) + (_file_problems(config.model) if check_files else [])
    if problems:
        raise ConfigError(f"invalid config: {len(problems)} problem(s)", problems)
    return config


def load_config(path: str | Path, *, check_files: bool = True) -> Config:
    """Read and validate a YAML config file.

    Raises ConfigError (with ``problems``, each naming its YAML key path) when the file cannot be
    read or parsed, or any value is invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror}).") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}."
        ) from None
    try:
        return parse_config(data, path.resolve().parent, check_files=check_files)
    except ConfigError as exc:
        problems = [f"{path.name}: {p}" for p in exc.problems]
        raise ConfigError(f"{path}: {len(problems)} problem(s) in the config", problems) from None
