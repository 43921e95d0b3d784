"""The JSON sidecar records of a run: everything needed to audit a map later.

Built here, written by :func:`xaimed.writers.sidecar.write_sidecar`.
"""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from xaimed import __version__
from xaimed.casepath import Attribution
from xaimed.config import Config, MethodEntry, OutputsSection
from xaimed.engine.targets import TargetReduction
from xaimed.io.case import Case
from xaimed.methods.postprocess import is_identity
from xaimed.methods.spec import MethodInfo
from xaimed.model import LoadedModel
from xaimed.prediction import Prediction, Target
from xaimed.preprocess import Prepared
from xaimed.volume import Volume
from xaimed.writers.channel_maps import channel_map_name

RESEARCH_NOTE = "Research use only; not for diagnosis."


def software_versions() -> dict[str, str]:
    """Versions of xaimed and the libraries that shape a map, for the sidecar."""
    import captum
    import nibabel
    import scipy

    return {
        "xaimed": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "captum": captum.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "nibabel": nibabel.__version__,
    }


def method_sidecar(
    *,
    case: Case,
    prepared: Prepared,
    prediction: Prediction,
    entry: MethodEntry,
    info: MethodInfo,
    params: Any,
    target: Target,
    heatmap: Volume,
    wall: float,
    config: Config,
    model: LoadedModel,
    reduction: TargetReduction | None,
    passes: dict[str, int],
    batch_size: int,
    software: dict[str, str],
) -> dict[str, Any]:
    """The sidecar contents (the audit record) of one map: source, method, target, prediction,
    model, preprocessing, cost."""
    data = heatmap.array
    return {
        "note": RESEARCH_NOTE,
        "case_id": case.case_id,
        "label": case.label,
        "source": {
            "path": case.source,
            # A case list's mask column: evaluate reads it back to re-explain the case alike.
            "mask": str(case.mask) if case.mask is not None else None,
            "shape": list(prepared.source.array.shape),
            "affine_ras": prepared.source.affine.round(6).tolist(),
            "axcodes": prepared.source.axcodes,
            # 2: a 2D image, held as a plane of depth 1 (its map file is 2D).
            "spatial_dims": 2 if prepared.source.is_2d else 3,
        },
        "method": {
            "id": entry.output_id,
            "name": info.name,
            "family": info.family,
            "params": params.model_dump(mode="json"),
            "postprocess": entry.postprocess.model_dump(mode="json"),
            "raw": is_identity(entry.postprocess),
        },
        "target": {
            "index": target.index,
            "name": target.name,
            "explained_output": model.output,
            "spec": config.target.class_,
            "segmentation": reduction.sidecar_fields() if reduction is not None else None,
        },
        "tiling": config.tiling.model_dump() if config.tiling is not None else None,
        "prediction": prediction.as_dict(model.output),
        "model": model.describe(),
        "config_sha256": config.config_hash(),
        "preprocessing": prepared.sidecar_fields(),
        "native_map": {
            "shape": list(prepared.geometry.shape),
            "spacing_mm": np.asarray(prepared.geometry.spacing).round(6).tolist(),
        },
        "map": {
            "min": float(data.min()),
            "max": float(data.max()),
            "sum": float(data.sum(dtype=np.float64)),
        },
        "passes": passes,
        "batch_size": batch_size,
        "wall_s": round(wall, 4),
        "device": str(model.device),
        "precision": config.runtime.precision,
        "seed": config.runtime.seed,
        "software": software,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def channel_record(result: Attribution, stem: str, outputs: OutputsSection) -> dict[str, Any]:
    """The sidecar's ``channels`` record of a map of a multi-channel source: each channel's
    share of the total absolute attribution and its map's file (see
    :mod:`xaimed.writers.channel_maps`)."""
    shares = result.channel_shares
    return {
        "rule": "each channel's raw part of the map (before post-processing); the parts add up "
        "to the raw combined map, and a share is sum |part| / sum over channels of sum |part|",
        "shares": None if shares is None else {k: round(v, 6) for k, v in shares.items()},
        "maps": {
            name: channel_map_name(stem, name, outputs, part) if outputs.nifti else None
            for name, part in result.channel_maps.items()
        },
    }


def dominant_sidecar(case: Case, entry: MethodEntry, labels: dict[int, str]) -> dict[str, Any]:
    """The sidecar of a dominant-class label map."""
    return {
        "note": RESEARCH_NOTE,
        "case_id": case.case_id,
        "method": entry.output_id,
        "rule": "argmax over classes of the per-class attribution maps",
        "labels": {str(index): name for index, name in labels.items()},
    }
