"""The bridge from evaluation to xaimed's own pieces: model, preprocessing, methods.

Metrics that need the model again (faithfulness curves, the randomisation cascade, robustness,
checkpoint agreement) get it here, wrapped exactly as ``xaimed explain`` wraps it, and re-run a
method along the one case path (:mod:`xaimed.casepath`) with the run's seed, batch size and
target, so that a re-explained map is the map the run would have written for that model and
input.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from xaimed.casepath import OpenCase, attribute
from xaimed.casepath import open_case as open_source
from xaimed.config import Config, MethodEntry, ModelSection
from xaimed.engine.batching import choose_batch_size
from xaimed.engine.scoring import Scorer, build_scorer
from xaimed.errors import InputError, ModelError
from xaimed.io.case import Case
from xaimed.model import LoadedModel, load_model
from xaimed.models.slicewise import same_slicing, slice_case


def like(scorer: Scorer, network: torch.nn.Module, config: Config) -> Scorer:
    """A scorer for another network (a randomised copy, a checkpoint) measuring the same region.

    Segmentation regions are fixed by the original model on the unperturbed input; a randomised
    model must be scored on the same voxels, not on its own (meaningless) prediction.
    """
    other = build_scorer(network, config, is_script=scorer.is_script)
    same_slicing(scorer.network, network)
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


def case_of_run(row: dict[str, str]) -> Case:
    """The case a manifest row was made from, as the run read it.

    The row gives the id, source and label; the map's sidecar gives the mask of a case list's
    ``mask`` column. The source is looked up like a case-list entry (a NIfTI file, or the DICOM
    study of that folder with this case's id, or the only one), so a DICOM case keeps its
    case-list id.
    """
    source = Path(row["source"])
    if not source.exists():
        raise InputError(
            f"case {row['case_id']}: source {source} (from the manifest) does not exist; "
            "restore it."
        )
    mask = None
    try:
        recorded = json.loads(Path(row["sidecar"]).read_text(encoding="utf-8"))["source"]
        mask = recorded.get("mask")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # a map without a readable sidecar fails when the map itself is read
    return Case(
        row["case_id"],
        source,
        format=None,
        mask=Path(mask) if mask else None,
        label=row.get("label") or None,
    )


def open_case(case: Case, config: Config, scorer: Scorer, device: torch.device) -> OpenCase:
    """Open a case as the run did, fix its target region and size its batches."""
    opened = open_source(case, config).on(device)
    slice_case(scorer.counting, opened.prepared.geometry.axcodes, case.case_id)
    scorer.reduction.configure(opened.inputs, opened.data)
    batch = choose_batch_size(
        scorer.counting, opened.inputs,
        budget=config.runtime.memory_budget_bytes, fixed=config.runtime.batch_size,
    )  # fmt: skip
    return opened.sized(batch)


def reexplain(
    scorer: Scorer,
    case: OpenCase,
    entry: MethodEntry,
    target: int,
    config: Config,
    *,
    inputs: torch.Tensor | None = None,
) -> np.ndarray:
    """The method's map for ``inputs`` (default: the case's), on the source grid, post-processed.

    The same path as the run (:func:`xaimed.casepath.attribute`: registry runner, parameters,
    seed, batch size, NaN check, inverse, post-processing), so that with the run's model and
    input it reproduces the stored map.
    """
    result = attribute(scorer, case, entry, target, seed=config.runtime.seed, inputs=inputs)
    return result.heatmap.array
