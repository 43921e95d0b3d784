"""The bridge from evaluation to xaimed's own pieces: model, preprocessing, methods.

Metrics that need the model again (faithfulness curves, the randomisation cascade, robustness,
checkpoint agreement) get it here, wrapped exactly as ``xaimed explain`` wraps it, and re-run a
method along the one case path (:mod:`xaimed.casepath`) with the run's seed, batch size and
target, so that a re-explained map is the map the run would have written for that model and
input.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from xaimed.casepath import OpenCase, attribute
from xaimed.casepath import open_case as open_source
from xaimed.config import Config, MethodEntry, ModelSection
from xaimed.engine.batching import choose_batch_size
from xaimed.engine.scoring import Scorer, build_scorer
from xaimed.errors import InputError, ModelError
from xaimed.io.case import Case, ChannelFile
from xaimed.model import LoadedModel, load_model
from xaimed.models.slicewise import same_slicing, slice_case
from xaimed.preprocess import Prepared
from xaimed.volume import Volume
from xaimed.writers.manifest import ManifestRow


def like(scorer: Scorer, network: torch.nn.Module, config: Config) -> Scorer:
    """A scorer for another network (a randomised copy, a checkpoint) measuring the same region.

    Segmentation regions are fixed by the original model on the unperturbed input; a randomised
    model must be scored on the same voxels, not on its own (meaningless) prediction.
    """
    other = build_scorer(network, config, is_script=scorer.is_script)
    same_slicing(scorer.network, network)
    other.reduction.use(scorer.reduction.case_regions)
    return other


def channels_last(loaded: LoadedModel) -> LoadedModel:
    """``loaded`` with its convolution weights in channels-last layout on the CPU (in place).

    PyTorch's default-layout 3D convolution on the CPU has a slow backward pass; with
    channels-last weights it runs oneDNN's kernels instead, measured 3-4x faster for a forward
    and backward pass of the sample model and 1.5x for a forward pass
    (``benchmarks/evaluate.py``). Every re-explanation and curve of evaluate is such a pass. The
    values are the same computation in another summation order: they differ from the
    default layout's in the last float32 bits (gradients ~1e-7 relative). A model with both 2D
    and 3D weights, a TorchScript model or another device is left as it is.
    """
    if loaded.device.type != "cpu" or loaded.is_script:
        return loaded
    ranks = {p.dim() for p in loaded.module.parameters() if p.dim() in (4, 5)}
    if ranks == {5}:
        loaded.module.to(memory_format=torch.channels_last_3d)
    elif ranks == {4}:
        loaded.module.to(memory_format=torch.channels_last)
    return loaded


def load_checkpoint(
    section: ModelSection, path: Path, device: torch.device, key: str
) -> LoadedModel:
    """The configured model with its weights (or TorchScript file) replaced by ``path``."""
    if not Path(path).is_file():
        raise ModelError(f"{key}: checkpoint {path} does not exist; check the path.")
    field = "torchscript" if section.torchscript is not None else "weights"
    return channels_last(load_model(section.model_copy(update={field: Path(path)}), device))


def case_of_run(row: ManifestRow) -> Case:
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
    channels: tuple[ChannelFile, ...] = ()
    try:
        recorded = json.loads(Path(row["sidecar"]).read_text(encoding="utf-8"))["source"]
        mask = recorded.get("mask")
        # A multi-sequence case: its channel files, in the run's order.
        channels = tuple(
            ChannelFile(c["name"], Path(c["path"])) for c in recorded.get("channels") or ()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # a map without a readable sidecar fails when the map itself is read
    return Case(
        row["case_id"],
        source,
        format=None,
        mask=Path(mask) if mask else None,
        label=row.get("label") or None,
        channels=channels,
    )


def open_case(
    case: Case,
    config: Config,
    scorer: Scorer,
    device: torch.device,
    own_prepare: Callable[[Volume], Prepared] | None = None,
) -> OpenCase:
    """Open a case as the run did (with the model format's own preprocessing, nnU-Net's or a
    MONAI bundle's, when it brings one), fix its target region and size its batches."""
    opened = open_source(case, config, own_prepare).on(device)
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
