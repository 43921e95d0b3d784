"""The one path of a case: read -> Volume -> prepare -> model input -> method -> inverse -> map.

``xaimed explain`` (every executor, through :class:`xaimed.run.worker.Explainer`) and ``xaimed
evaluate`` (re-explaining for its metrics) both open a case with :func:`open_case` and compute a
map with :func:`attribute`, so a map re-made by evaluate is the map explain wrote: same reading,
same preprocessing and its inverse, same per-case files (a case list's mask), same checks. What
differs is only what follows: explain writes the map, evaluate compares it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from xaimed.config import Config, MethodEntry
from xaimed.engine.scoring import Scorer
from xaimed.engine.seeding import seed_everything
from xaimed.errors import InputError, MethodError
from xaimed.finite import require_map_on_source
from xaimed.io.case import Case
from xaimed.io.read import read_case
from xaimed.methods import registry
from xaimed.methods.casefiles import CaseFiles
from xaimed.methods.context import MethodContext, MethodOutput
from xaimed.methods.postprocess import postprocess
from xaimed.preprocess import Prepared, prepare
from xaimed.volume import Volume


@dataclass(frozen=True)
class OpenCase:
    """A case read and preprocessed: the model's input and the means to map back.

    ``inputs`` is (1, C, I, J, K); it stays on the CPU until :meth:`on` moves it (a case may be
    opened ahead of time in a background thread). ``data`` is what methods may ask of the case
    (per-case files, the model grid). ``batch_size`` is set once the model has been sized on
    this input (:meth:`sized`); None before.
    """

    case: Case
    prepared: Prepared
    inputs: torch.Tensor
    data: CaseFiles
    batch_size: int | None = field(default=None)

    @property
    def case_id(self) -> str:
        """The case's id."""
        return self.case.case_id

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size of the source grid, in mm."""
        return self.prepared.source.spacing

    def on(self, device: torch.device) -> OpenCase:
        """The same case with its input on ``device``."""
        return replace(self, inputs=self.inputs.to(device))

    def sized(self, batch_size: int) -> OpenCase:
        """The same case with the batch size its methods may use."""
        return replace(self, batch_size=batch_size)

    def to_model_grid(self, source_map: np.ndarray) -> np.ndarray:
        """A map on the source grid pushed onto the model's input grid.

        Uses the preprocessing's own forward grid steps with nearest-neighbour sampling (the
        label path): evaluate's curves need only the ranking of voxels, which nearest sampling
        keeps, and the map came from this grid through the inverse.
        """
        return self.prepared.forward_labels(np.asarray(source_map, dtype=np.float32))


def open_case(
    case: Case, config: Config, own_prepare: Callable[[Volume], Prepared] | None = None
) -> OpenCase:
    """Read ``case`` and preprocess it as ``config`` says (safe in a background thread), or with
    ``own_prepare``, the preprocessing of a model format that brings its own (nnU-Net, MONAI
    bundles: :attr:`xaimed.model.LoadedModel.prepare`).

    Raises InputError when the preprocessed input does not fit the model.
    """
    volume = read_case(case, config)
    check_dims(config, case, volume)
    if own_prepare is not None:
        prepared = own_prepare(volume)
    else:
        prepared = prepare(volume, config.preprocessing, model_size=config.model.input_size)
        check_input(config, case, prepared)
    data = CaseFiles(
        case.case_id,
        prepared,
        config.preprocessing,
        model_size=config.model.input_size,
        base_dir=config.base_dir,
        mask=case.mask,
    )
    return OpenCase(case, prepared, torch.from_numpy(prepared.array)[None], data)


def check_dims(config: Config, case: Case, volume: Volume) -> None:
    """Refuse a 3D volume for a 2D model and a 2D image for a 3D model (model.spatial_dims)."""
    shape = volume.spatial_shape
    if config.model.spatial_dims == 2 and shape[2] != 1:
        raise InputError(
            f"case {case.case_id}: the image is a 3D volume of {shape[2]} slices {shape} but "
            "model.spatial_dims is 2 (a 2D model); give 2D images, or a 3D model."
        )
    sliced = config.model.slicewise is not None or any(
        member.slicewise is not None for member in config.model.ensemble or []
    )
    if config.model.spatial_dims == 3 and volume.is_2d and sliced:
        # The general advice below (set spatial_dims: 2) is refused at load with slicewise.
        raise InputError(
            f"case {case.case_id}: the image is 2D {shape[:2]}, but model.slicewise runs its 2D "
            "network over the slices of 3D volumes; to explain 2D images, remove model.slicewise "
            "and set model.spatial_dims: 2."
        )
    if config.model.spatial_dims == 3 and volume.is_2d:
        raise InputError(
            f"case {case.case_id}: the image is 2D {shape[:2]} but the model is 3D; set "
            "model.spatial_dims: 2 if the model takes 2D images."
        )


def check_input(config: Config, case: Case, prepared: Prepared) -> None:
    """Refuse a preprocessed input whose size or channels the model does not take."""
    section = config.model
    channels, *spatial = prepared.array.shape
    if section.spatial_dims == 2 and spatial[2] != 1:
        raise InputError(
            f"case {case.case_id}: after preprocessing the 2D image is {tuple(spatial)}, not a "
            "plane (X, Y, 1); give preprocessing.reorient a code whose third axis is the image's "
            "normal, or remove it."
        )
    if section.input_size is not None and tuple(spatial) != tuple(section.input_size):
        raise InputError(
            f"case {case.case_id}: after preprocessing the volume is {tuple(spatial)} but "
            f"model.input_size is {tuple(section.input_size)}; add preprocessing.crop_pad or "
            "preprocessing.resample."
        )
    if channels != section.in_channels:
        raise InputError(
            f"case {case.case_id}: the model takes {section.in_channels} channel(s) but the "
            f"preprocessed input has {channels}; set preprocessing.channels."
        )


@dataclass(frozen=True)
class Attribution:
    """One method's map of one case and target, back on the source grid and post-processed.

    ``params`` are the method's validated parameters (defaults filled in), ``details`` what the
    runner reported besides the map (for the sidecar).
    """

    heatmap: Volume
    params: Any
    details: dict[str, Any]
    # Each source channel's raw part of the map (before post-processing), by channel name; they
    # add up to the raw map exactly. Empty for one source channel or a spatial map (CAMs).
    channel_maps: dict[str, Volume] = field(default_factory=dict)

    @property
    def channel_shares(self) -> dict[str, float] | None:
        """Each channel's share of the total absolute attribution (they sum to 1); None for
        no channel parts or a map that is zero everywhere."""
        if not self.channel_maps:
            return None
        totals = {
            name: float(np.abs(part.array).sum(dtype=np.float64))
            for name, part in self.channel_maps.items()
        }
        total = sum(totals.values())
        if total <= 0:
            return None
        return {name: value / total for name, value in totals.items()}


def attribute(
    scorer: Scorer,
    case: OpenCase,
    entry: MethodEntry,
    target: int,
    *,
    seed: int,
    inputs: torch.Tensor | None = None,
    progress: Callable[[str], None] | None = None,
) -> Attribution:
    """Run ``entry`` on ``case`` (or on ``inputs``, a perturbed copy of its input) for output
    ``target``: seeded, checked for NaN, inverted onto the source grid, post-processed.

    ``case`` must be :meth:`OpenCase.sized`. Raises MethodError for an unknown method or a map
    that is not finite; other exceptions of the runner propagate.
    """
    # The config validated the name and parameters at load (entry.settings).
    info = registry.method(entry.name)
    if case.batch_size is None:
        raise ValueError("attribute() needs a sized case (OpenCase.sized)")
    params = entry.settings
    seed_everything(seed)
    x = case.inputs if inputs is None else inputs
    context = MethodContext(
        model=scorer.counting,
        inputs=x,
        target=target,
        seed=seed,
        batch_size=case.batch_size,
        device=x.device,
        is_script=scorer.is_script,
        network=scorer.network,
        case=case.data,
        progress=progress,
        spatial_dims=scorer.spatial_dims,
    )
    with warnings.catch_warnings():
        # Captum warns on every call that it set requires_grad and installed hooks; both are
        # expected here and would bury the messages that matter.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\.")
        output = info.run(context, params)
    if isinstance(output, torch.Tensor):
        output = MethodOutput(output)
    attribution = output.attribution.detach().float().cpu().numpy()[0]
    if not np.all(np.isfinite(attribution)):
        raise MethodError(
            f"{entry.output_id} produced NaN or infinite values on case {case.case_id}; "
            "try runtime.precision: fp32 or other method parameters."
        )
    raw, parts = case.prepared.invert_map_parts(attribution)
    require_map_on_source(attribution, raw.array, where=f"case {case.case_id}")
    heatmap = raw.with_array(postprocess(raw.array, entry.postprocess))
    channel_maps = {name: raw.with_array(part) for name, part in parts.items()}
    return Attribution(heatmap, params, dict(output.details), channel_maps)
