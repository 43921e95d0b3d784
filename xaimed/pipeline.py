"""Run every configured method on every case of an input and write the outputs.

This is the library entry point behind ``xaimed explain``. One case failing (unreadable file,
wrong shape, a method that cannot run) is recorded in the manifest with its reason and the run
goes on; only a config or model that cannot be used at all stops the run.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xaimed import __version__
from xaimed.config import Config, MethodEntry, load_config
from xaimed.engine.batching import choose_batch_size
from xaimed.engine.counting import CountingModel
from xaimed.engine.scoring import build_scorer
from xaimed.engine.seeding import seed_everything
from xaimed.engine.targets import TargetReduction
from xaimed.errors import InputError, MethodError, XaimedError
from xaimed.io.cases import Case, discover_cases
from xaimed.io.read import read_case
from xaimed.methods import registry
from xaimed.methods.casedata import CaseData
from xaimed.methods.context import MethodContext, MethodOutput
from xaimed.methods.postprocess import is_identity, postprocess
from xaimed.model import LoadedModel, load_model, resolve_device
from xaimed.preprocess import Prepared, prepare
from xaimed.progress import LogReporter, Reporter
from xaimed.target import Prediction, Target, predict, resolve_targets
from xaimed.volume import Volume
from xaimed.writers.dicom_outputs import dicom_source_record, write_dicom_outputs
from xaimed.writers.manifest import write_manifest
from xaimed.writers.nifti import write_label_map, write_nifti_map
from xaimed.writers.png import write_overlay_png
from xaimed.writers.sidecar import write_sidecar

log = logging.getLogger("xaimed")

RESEARCH_NOTE = "Research use only; not for diagnosis."


@dataclass
class RunResult:
    """What a run did: one manifest row per case, method and target."""

    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        """Path of the run's manifest CSV."""
        return self.out_dir / "manifest.csv"

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Rows whose status is not ok."""
        return [r for r in self.rows if r["status"] != "ok"]


@dataclass
class _Run:
    """State shared by all cases of one run."""

    config: Config
    model: LoadedModel
    counting: CountingModel
    out_dir: Path
    reporter: Reporter
    software: dict[str, str]
    batch_sizes: dict[tuple[int, ...], int] = field(default_factory=dict)
    warned: set[tuple[str, str]] = field(default_factory=set)
    # Between the counting wrapper and the (possibly tiled) model; reduces segmentation maps.
    reduction: TargetReduction | None = None


def _software() -> dict[str, str]:
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


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def _methods(config: Config, names: list[str] | None) -> list[MethodEntry]:
    if not names:
        return config.methods
    unknown = [n for n in names if registry.find(n) is None]
    if unknown:
        raise XaimedError(
            f"--method {', '.join(unknown)}: unknown method; `xaimed methods` lists them."
        )
    return [MethodEntry(name=n) for n in dict.fromkeys(names)]


def explain(
    input_path: str | Path,
    config: Config | str | Path,
    out_dir: str | Path,
    *,
    methods: list[str] | None = None,
    device: str | None = None,
    reporter: Reporter | None = None,
) -> RunResult:
    """Explain every case under ``input_path`` with every configured method.

    ``config`` is a validated Config or the path of a YAML file. ``methods`` (names) replaces the
    config's method list with those methods at their default parameters; ``device`` overrides
    ``runtime.device``. Writes per case and method a NIfTI map, a JSON sidecar and a PNG under
    ``out_dir/<case_id>/``, and ``out_dir/manifest.csv``. Raises XaimedError only when nothing can
    run (bad config, model or input path); per-case failures are in the returned rows.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    config = config.model_copy(deep=True)
    config.methods = _methods(config, methods)
    if device is not None:
        config.runtime.device = device
    reporter = reporter or LogReporter()
    out = Path(out_dir)
    cases = discover_cases(Path(input_path))
    if config.runtime.threads:
        torch.set_num_threads(config.runtime.threads)
    torch_device = resolve_device(config.runtime.device)
    model = load_model(config.model, torch_device)
    scorer = build_scorer(model.module, config, is_script=model.is_script)
    run = _Run(
        config, model, scorer.counting, out, reporter, _software(), reduction=scorer.reduction
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(
        json.dumps(config.model_dump(mode="json", by_alias=True), indent=2) + "\n"
    )
    result = RunResult(out)
    reporter.start(len(cases) * len(config.methods))
    with warnings.catch_warnings():
        # Captum warns on every call that it set requires_grad and installed hooks; both are
        # expected here and would bury the messages that matter.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\.")
        for case in cases:
            reporter.step(f"{case.case_id}")
            result.rows += _run_case(run, case)
            write_manifest(result.rows, result.manifest)
    write_manifest(result.rows, result.manifest)
    reporter.finish()
    return result


def _failed_rows(run: _Run, case: Case, message: str) -> list[dict[str, Any]]:
    rows = []
    for entry in run.config.methods:
        rows.append(
            {
                "case_id": case.case_id,
                "source": str(case.path),
                "method": entry.output_id,
                "status": "failed",
                "error": message,
            }
        )
        run.reporter.advance(f"{case.case_id} {entry.output_id}: FAILED: {message}")
    return rows


def _check_input(run: _Run, case: Case, prepared: Prepared) -> None:
    section = run.config.model
    channels, *spatial = prepared.array.shape
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


def _prepare_case(run: _Run, case: Case) -> tuple[Prepared, torch.Tensor, Prediction]:
    volume = read_case(case, run.config)
    prepared = prepare(volume, run.config.preprocessing, model_size=run.config.model.input_size)
    _check_input(run, case, prepared)
    inputs = torch.from_numpy(prepared.array)[None].to(run.model.device)
    try:
        if run.reduction is not None:
            run.reduction.reset()
        with torch.no_grad():
            outputs = run.counting(inputs)
            if run.reduction is not None:
                outputs = run.reduction.fix_regions(
                    outputs, inputs, _case_data(run, case, prepared)
                )
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise InputError(
            f"case {case.case_id}: the model fails on this input of shape "
            f"{tuple(inputs.shape)} ({first}); check model.input_size and preprocessing."
        ) from None
    prediction = predict(outputs, output_kind=run.model.output, classes=run.model.classes)
    if run.reduction is not None:
        prediction = run.reduction.adjust(prediction)
    return prepared, inputs, prediction


def _case_data(run: _Run, case: Case, prepared: Prepared) -> CaseData:
    return CaseData(
        case.case_id,
        prepared,
        run.config.preprocessing,
        model_size=run.config.model.input_size,
        base_dir=run.config.base_dir,
    )


def _run_case(run: _Run, case: Case) -> list[dict[str, Any]]:
    try:
        prepared, inputs, prediction = _prepare_case(run, case)
        targets = resolve_targets(run.config.target.class_, prediction)
        if run.reduction is not None:
            run.reduction.check(targets, case.case_id)
    except XaimedError as exc:
        return _failed_rows(run, case, str(exc))
    rows = []
    shape = tuple(inputs.shape)
    if shape not in run.batch_sizes:
        run.batch_sizes[shape] = choose_batch_size(
            run.counting,
            inputs,
            budget=run.config.runtime.memory_budget_bytes,
            fixed=run.config.runtime.batch_size,
        )
    for entry in run.config.methods:
        method_rows = [
            _run_method(run, case, prepared, inputs, prediction, entry, target, targets)
            for target in targets
        ]
        maps = [row.pop("_heatmap", None) for row in method_rows]
        rows += method_rows
        if len(targets) > 1 and all(m is not None for m in maps):
            rows.append(_write_dominant(run, case, entry, targets, maps))
    return rows


def _write_dominant(
    run: _Run, case: Case, entry: MethodEntry, targets: list[Target], maps: list[Volume]
) -> dict[str, Any]:
    """The dominant-class label map: for each voxel, the class with the largest attribution."""
    stem = f"{case.case_id}_{_file_part(entry.output_id)}_dominant"
    labels = {i: t.name for i, t in enumerate(targets)}
    dominant = np.argmax(np.stack([m.array for m in maps]), axis=0)
    suffix = ".nii.gz" if run.config.outputs.compress else ".nii"
    path = write_label_map(
        maps[0].with_array(dominant), run.out_dir / case.case_id / f"{stem}{suffix}",
        labels={i: targets[i].name for i in labels},
    )  # fmt: skip
    record = {
        "note": RESEARCH_NOTE,
        "case_id": case.case_id,
        "method": entry.output_id,
        "rule": "argmax over classes of the per-class attribution maps",
        "labels": {str(index): name for index, name in labels.items()},
    }
    sidecar = write_sidecar(record, run.out_dir / case.case_id / f"{stem}.json")
    return {
        "case_id": case.case_id, "source": str(case.path), "method": entry.output_id,
        "target": "dominant", "status": "ok", "nifti": str(path), "sidecar": str(sidecar),
    }  # fmt: skip


def _run_method(
    run: _Run,
    case: Case,
    prepared: Prepared,
    inputs: torch.Tensor,
    prediction: Prediction,
    entry: MethodEntry,
    target: Target,
    targets: list[Target],
) -> dict[str, Any]:
    info = registry.find(entry.name)
    assert info is not None  # the config validator checked the name
    row: dict[str, Any] = {
        "case_id": case.case_id,
        "source": str(case.path),
        "method": entry.output_id,
        "target": target.name,
        "predicted_class": prediction.name_of(prediction.predicted),
        "probability": round(prediction.probabilities[target.index], 6),
        "warning": info.warning or "",
    }
    stem = f"{case.case_id}_{_file_part(entry.output_id)}"
    if len(targets) > 1:
        stem += f"_{_file_part(target.name)}"
    case_dir = run.out_dir / case.case_id
    t0 = time.perf_counter()
    run.counting.reset()
    try:
        params = info.params_model.model_validate(entry.params)
        seed_everything(run.config.runtime.seed)
        context = MethodContext(
            model=run.counting,
            inputs=inputs,
            target=target.index,
            seed=run.config.runtime.seed,
            batch_size=run.batch_sizes[tuple(inputs.shape)],
            device=run.model.device,
            is_script=run.model.is_script,
            network=run.model.module,
            case=_case_data(run, case, prepared),
            progress=lambda line: run.reporter.step(f"{case.case_id} {line}"),
        )
        output = info.run(context, params)
        if isinstance(output, torch.Tensor):
            output = MethodOutput(output)
        attribution = output.attribution.detach().float().cpu().numpy()[0]
        if not np.all(np.isfinite(attribution)):
            raise MethodError(
                f"{entry.output_id} produced NaN or infinite values on case {case.case_id}; "
                "try runtime.precision: fp32 or other method parameters."
            )
        raw = prepared.invert_map(attribution)
        heatmap = raw.with_array(postprocess(raw.array, entry.postprocess))
        wall = time.perf_counter() - t0
        passes = run.counting.count
        if run.config.outputs.nifti:
            suffix = ".nii.gz" if run.config.outputs.compress else ".nii"
            row["nifti"] = str(
                write_nifti_map(heatmap, case_dir / f"{stem}{suffix}", method=entry.output_id)
            )
        if run.config.outputs.png:
            title = (
                f"{case.case_id} · {entry.output_id} · target {target.name} · predicted "
                f"{prediction.name_of(prediction.predicted)} "
                f"(p={prediction.probabilities[prediction.predicted]:.2f}) · {RESEARCH_NOTE}"
            )
            row["png"] = str(
                write_overlay_png(prepared.source, heatmap, case_dir / f"{stem}.png", title=title)
            )
        record = _sidecar(run, case, prepared, prediction, entry, params, target, heatmap, wall)
        warnings_ = [info.warning] if info.warning else []
        details = dict(output.details)
        warnings_ += details.pop("warnings", [])
        record["method_details"] = details
        record["warnings"] = warnings_
        row["warning"] = " | ".join(warnings_)
        if prepared.source.source.format == "dicom":
            row.update(
                write_dicom_outputs(
                    prepared.source,
                    heatmap,
                    case_dir,
                    stem,
                    outputs=run.config.outputs,
                    method=entry.output_id,
                    params={
                        "params": record["method"]["params"],
                        "postprocess": record["method"]["postprocess"],
                        "preprocessing": run.config.preprocessing.model_dump(mode="json"),
                    },
                    target=target.name,
                    model_sha256=run.model.sha256,
                )
            )
            record["source"]["dicom"] = dicom_source_record(prepared.source)
        record["warnings"] += prepared.source.meta.get("warnings", [])
        row["sidecar"] = str(write_sidecar(record, case_dir / f"{stem}.json"))
        row["_heatmap"] = heatmap
        row.update(
            status="ok",
            wall_s=round(wall, 3),
            forward_passes=passes.forward,
            backward_passes=passes.backward,
        )
        for message in warnings_:
            if (entry.output_id, message) not in run.warned:  # once per run, not per case
                run.warned.add((entry.output_id, message))
                run.reporter.warn(f"{entry.output_id}: {message}")
        run.reporter.advance(
            f"{case.case_id} {entry.output_id} ({target.name}): ok in {wall:.1f} s"
        )
    except XaimedError as exc:
        row.update(status="failed", error=str(exc), wall_s=round(time.perf_counter() - t0, 3))
        run.reporter.advance(f"{case.case_id} {entry.output_id}: FAILED: {exc}")
    except Exception as exc:
        log.debug("method %s failed on %s", entry.output_id, case.case_id, exc_info=True)
        message = f"{entry.output_id} failed on case {case.case_id}: {type(exc).__name__}: {exc}"
        row.update(status="failed", error=message, wall_s=round(time.perf_counter() - t0, 3))
        run.reporter.advance(f"{case.case_id} {entry.output_id}: FAILED: {message}")
    return row


def _sidecar(
    run: _Run,
    case: Case,
    prepared: Prepared,
    prediction: Prediction,
    entry: MethodEntry,
    params: Any,
    target: Target,
    heatmap: Any,
    wall: float,
) -> dict[str, Any]:
    info = registry.find(entry.name)
    assert info is not None
    data = heatmap.array
    return {
        "note": RESEARCH_NOTE,
        "case_id": case.case_id,
        "source": {
            "path": str(case.path),
            "shape": list(prepared.source.array.shape),
            "affine_ras": prepared.source.affine.round(6).tolist(),
            "axcodes": prepared.source.axcodes,
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
            "explained_output": run.model.output,
            "spec": run.config.target.class_,
            "segmentation": run.reduction.record() if run.reduction is not None else None,
        },
        "tiling": run.config.tiling.model_dump() if run.config.tiling is not None else None,
        "prediction": prediction.as_dict(run.model.output),
        "model": run.model.describe(),
        "config_sha256": run.config.config_hash(),
        "preprocessing": prepared.records(),
        "native_map": {
            "shape": list(prepared.array.shape[1:]),
            "spacing_mm": np.linalg.norm(prepared.affine[:3, :3], axis=0).round(6).tolist(),
        },
        "map": {
            "min": float(data.min()),
            "max": float(data.max()),
            "sum": float(data.sum(dtype=np.float64)),
        },
        "passes": run.counting.count.as_dict(),
        "batch_size": run.batch_sizes[(1, *prepared.array.shape)],
        "wall_s": round(wall, 4),
        "device": str(run.model.device),
        "precision": run.config.runtime.precision,
        "seed": run.config.runtime.seed,
        "software": run.software,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
