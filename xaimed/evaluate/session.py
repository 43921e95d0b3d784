"""The bridge from evaluation to xaimed's own pieces: model, preprocessing, methods.

Metrics that need the model again (faithfulness curves, the randomisation cascade, robustness,
checkpoint agreement) get it here, wrapped exactly as ``xaimed explain`` wraps it, and re-run a
method through the registry with the run's seed, batch size and target, so that a re-explained
map is the map the run would have written for that model and input.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xaimed.config import Config, MethodEntry, ModelSection
from xaimed.engine.batching import choose_batch_size
from xaimed.engine.scoring import Scorer, build_scorer
from xaimed.engine.seeding import seed_everything
from xaimed.errors import InputError, MethodError, ModelError
from xaimed.io.cases import Case, discover_cases
from xaimed.io.nifti import is_nifti
from xaimed.io.read import read_case
from xaimed.methods import registry
from xaimed.methods.casedata import CaseData
from xaimed.methods.context import MethodContext, MethodOutput
from xaimed.methods.postprocess import postprocess
from xaimed.model import LoadedModel, load_model
from xaimed.preprocess import Prepared, prepare


def like(scorer: Scorer, network: torch.nn.Module, config: Config) -> Scorer:
    """A scorer for another network (a randomised copy, a checkpoint) measuring the same region.

    Segmentation regions are fixed by the original model on the unperturbed input; a randomised
    model must be scored on the same voxels, not on its own (meaningless) prediction.
    """
    other = build_scorer(network, config, is_script=scorer.is_script)
    other.reduction.segmentation = scorer.reduction.segmentation
    other.reduction.regions = scorer.reduction.regions
    other.reduction.voxels = list(scorer.reduction.voxels)
    return other


def load_checkpoint(
    section: ModelSection, path: Path, device: torch.device, key: str
) -> LoadedModel:
    """The configured model with its weights (or TorchScript file) replaced by ``path``."""
    if not Path(path).is_file():
        raise ModelError(f"{key}: checkpoint {path} does not exist; check the path.")
    field = "torchscript" if section.torchscript is not None else "weights"
    return load_model(section.model_copy(update={field: Path(path)}), device)


@dataclass
class CaseState:
    """One case as the model sees it, ready for re-explaining and perturbing."""

    case_id: str
    prepared: Prepared
    inputs: torch.Tensor
    data: CaseData
    batch_size: int

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size of the source grid, in mm."""
        return self.prepared.source.spacing

    def to_model_grid(self, source_map: np.ndarray) -> np.ndarray:
        """A map on the source grid pushed onto the model's input grid.

        Uses the preprocessing's own forward grid steps with nearest-neighbour sampling (the
        label path): the curves need only the ranking of voxels, which nearest sampling keeps,
        and the map came from this grid through the inverse, so no re-explaining is needed.
        """
        return self.prepared.forward_labels(np.asarray(source_map, dtype=np.float32))


def _case(case_id: str, source: Path) -> Case:
    if is_nifti(source):
        return Case(case_id, source)
    for case in discover_cases(source):
        if case.case_id == case_id:
            return case
    raise InputError(f"case {case_id}: its source {source} no longer holds it; restore the input.")


def open_case(
    case_id: str, source: Path, config: Config, scorer: Scorer, device: torch.device
) -> CaseState:
    """Read and preprocess a case as the run did, fix its target region, size its batches."""
    if not source.exists():
        raise InputError(
            f"case {case_id}: source {source} (from the manifest) does not exist; restore it."
        )
    volume = read_case(_case(case_id, source), config)
    prepared = prepare(volume, config.preprocessing, model_size=config.model.input_size)
    inputs = torch.from_numpy(prepared.array)[None].to(device)
    data = CaseData(
        case_id, prepared, config.preprocessing,
        model_size=config.model.input_size, base_dir=config.base_dir,
    )  # fmt: skip
    scorer.reduction.configure(inputs, data)
    batch = choose_batch_size(
        scorer.counting, inputs,
        budget=config.runtime.memory_budget_bytes, fixed=config.runtime.batch_size,
    )  # fmt: skip
    return CaseState(case_id, prepared, inputs, data, batch)


def reexplain(
    scorer: Scorer,
    case: CaseState,
    entry: MethodEntry,
    target: int,
    config: Config,
    *,
    inputs: torch.Tensor | None = None,
) -> np.ndarray:
    """The method's map for ``inputs`` (default: the case's), on the source grid, post-processed.

    Same registry runner, parameters, seed, batch size and post-processing as the run, so that
    with the run's model and input it reproduces the stored map.
    """
    info = registry.find(entry.name)
    if info is None:
        raise MethodError(f"method {entry.name!r} of the run is not registered in this xaimed.")
    params = entry.settings
    seed = config.runtime.seed
    seed_everything(seed)
    context = MethodContext(
        model=scorer.counting,
        inputs=case.inputs if inputs is None else inputs,
        target=target,
        seed=seed,
        batch_size=case.batch_size,
        device=case.inputs.device,
        is_script=scorer.is_script,
        network=scorer.network,
        case=case.data,
    )
    with warnings.catch_warnings():
        # Captum warns on every call about requires_grad and hooks; expected here.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\.")
        output = info.run(context, params)
    if isinstance(output, MethodOutput):
        output = output.attribution
    attribution = output.detach().float().cpu().numpy()[0]
    raw = case.prepared.invert_map(attribution)
    return postprocess(raw.array, entry.postprocess)
