"""Run every configured method on every case of an input and write the outputs.

This is the library entry point behind ``xaimed explain``. ``explain`` hands the cohort to
:mod:`xaimed.run.cohort` (shards, resume, executors, manifest); an :class:`Explainer` does the
work of one case in one process. One case failing (unreadable file, wrong shape, a method that
cannot run) is recorded in the manifest with its reason and the run goes on; only a config or
model that cannot be used at all stops the run.
"""

from __future__ import annotations

import logging
import platform
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
from xaimed.engine.perturb import is_out_of_memory
from xaimed.engine.scoring import build_scorer
from xaimed.engine.seeding import seed_everything
from xaimed.engine.targets import TargetReduction
from xaimed.errors import InputError, MethodError, XaimedError
from xaimed.io.cases import Case
from xaimed.io.read import read_case
from xaimed.methods import registry
from xaimed.methods.casedata import CaseData
from xaimed.methods.context import MethodContext, MethodOutput
from xaimed.methods.postprocess import is_identity, postprocess
from xaimed.model import LoadedModel, load_model, resolve_device
from xaimed.preprocess import Prepared, prepare
from xaimed.progress import LogReporter, Reporter
from xaimed.run.memory import PeakMeter
from xaimed.run.options import RunOptions, interrupted_fields
from xaimed.run.records import (
    WorkKeys,
    case_identity,
    clear_stale_temporaries,
    record_path,
    write_record,
)
from xaimed.run.shard import Shard
from xaimed.run.signals import RunInterrupted, StopFlag
from xaimed.target import Prediction, Target, predict, resolve_targets
from xaimed.volume import Volume
from xaimed.writers.dicom_outputs import dicom_source_record, write_dicom_outputs
from xaimed.writers.naming import file_part
from xaimed.writers.nifti import write_label_map, write_nifti_map
from xaimed.writers.png import write_overlay_png
from xaimed.writers.sidecar import write_sidecar

log = logging.getLogger("xaimed")

RESEARCH_NOTE = "Research use only; not for diagnosis."


@dataclass
class RunResult:
    """What a run did: one manifest row per case, method and target.

    ``interrupted`` is True when SIGTERM/SIGINT stopped the run before all its work was done;
    ``plan`` is filled by a dry run (what would run and what would be skipped) instead of rows.
    """

    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    shard: Shard = field(default_factory=Shard)
    interrupted: bool = False
    plan: list[dict[str, Any]] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        """Path of this shard's manifest CSV (``manifest.csv`` for an unsharded run)."""
        return self.out_dir / f"manifest{self.shard.suffix}.csv"

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Rows whose work did not succeed (failed, interrupted, pending or not run)."""
        return [r for r in self.rows if r["status"] != "ok"]


@dataclass
class LoadedCase:
    """A case read and preprocessed, ready for the model (made ahead of time when prefetching)."""

    prepared: Prepared
    inputs: torch.Tensor


@dataclass
class CaseOutcome:
    """The rows of one case's work, and whether a stop request cut it short."""

    rows: list[dict[str, Any]]
    interrupted: bool = False


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


def _methods(config: Config, names: list[str] | None) -> list[MethodEntry]:
    if not names:
        return config.methods
    unknown = [n for n in names if registry.find(n) is None]
    if unknown:
        raise XaimedError(
            f"--method {', '.join(unknown)}: unknown method; `xaimed methods` lists them."
        )
    return [MethodEntry(name=n) for n in dict.fromkeys(names)]


def run_config(
    config: Config | str | Path, methods: list[str] | None = None, device: str | None = None
) -> Config:
    """The config a run uses: loaded, with ``--method`` and ``--device`` applied."""
    if not isinstance(config, Config):
        config = load_config(config)
    config = config.model_copy(deep=True)
    config.methods = _methods(config, methods)
    if device is not None:
        config.runtime.device = device
    return config


def explain(
    input_path: str | Path,
    config: Config | str | Path,
    out_dir: str | Path,
    *,
    methods: list[str] | None = None,
    device: str | None = None,
    reporter: Reporter | None = None,
    options: RunOptions | None = None,
) -> RunResult:
    """Explain every case under ``input_path`` with every configured method.

    ``input_path`` is a NIfTI file, a DICOM file, a folder (searched recursively) or a CSV/TSV
    case list. ``config`` is a validated Config or the path of a YAML file. ``methods`` (names)
    replaces the config's method list with those methods at their default parameters; ``device``
    overrides ``runtime.device``. ``options`` chooses the shard, resume behaviour, executor and
    devices (see :class:`xaimed.run.cohort.RunOptions`; the default runs everything here and
    skips work an earlier run finished). Writes per case and method a NIfTI map, a JSON sidecar
    and a PNG under ``out_dir/<case_id>/``, and the shard's manifest. Raises XaimedError only
    when nothing can run (bad config, model or input path); per-case failures are in the rows.
    """
    from xaimed.report.hook import refresh_report
    from xaimed.run.cohort import run_cohort

    result = run_cohort(
        Path(input_path),
        run_config(config, methods, device),
        Path(out_dir),
        options or RunOptions(),
        reporter or LogReporter(),
    )
    refresh_report(result.manifest, skip=bool(result.plan) or result.interrupted)
    return result


class Explainer:
    """Explains cases with one loaded model on one device; one per process.

    ``stop`` is checked before each method and at every progress report of long methods, so a
    SIGTERM discards only the method in flight.
    """

    def __init__(
        self,
        config: Config,
        out_dir: Path,
        *,
        reporter: Reporter | None = None,
        stop: StopFlag | None = None,
        model: LoadedModel | None = None,
    ) -> None:
        if config.runtime.threads:
            torch.set_num_threads(config.runtime.threads)
        self.config = config
        self.out_dir = out_dir
        self.reporter: Reporter = reporter or LogReporter()
        self.stop = stop or StopFlag()
        self.model = model or load_model(config.model, resolve_device(config.runtime.device))
        scorer = build_scorer(self.model.module, config, is_script=self.model.is_script)
        self.counting: CountingModel = scorer.counting
        # Between the counting wrapper and the (possibly tiled) model; reduces segmentation maps.
        self.reduction: TargetReduction | None = scorer.reduction
        self.software = _software()
        self.batch_sizes: dict[tuple[int, ...], int] = {}
        self.warned: set[tuple[str, str]] = set()
        self.memory = PeakMeter(self.model.device)
        self.keys = WorkKeys(config, self.model.sha256)

    def load(self, case: Case) -> LoadedCase:
        """Read and preprocess ``case`` (safe to run in a background thread)."""
        volume = read_case(case, self.config)
        prepared = prepare(
            volume, self.config.preprocessing, model_size=self.config.model.input_size
        )
        _check_input(self.config, case, prepared)
        return LoadedCase(prepared, torch.from_numpy(prepared.array)[None])

    def explain_case(
        self, case: Case, todo: list[MethodEntry], loaded: LoadedCase | Exception | None = None
    ) -> CaseOutcome:
        """Run ``todo`` on ``case``; each method that fully succeeds gets a completion record.

        ``loaded`` is the case read ahead of time, or the error reading it raised.
        """
        with warnings.catch_warnings():
            # Captum warns on every call that it set requires_grad and installed hooks; both
            # are expected here and would bury the messages that matter.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\.")
            return self._explain_case(case, todo, loaded)

    def _explain_case(
        self, case: Case, todo: list[MethodEntry], loaded: LoadedCase | Exception | None
    ) -> CaseOutcome:
        if self.stop.requested:
            cause = self.stop.signal_name or "stop requested"
            return CaseOutcome(
                [row for e in todo for row in self._interrupted_rows(case, e, cause)], True
            )
        clear_stale_temporaries(self.out_dir / case.case_id)
        try:
            if isinstance(loaded, Exception):
                raise loaded
            loaded = loaded or self.load(case)
            inputs = loaded.inputs.to(self.model.device)
            prediction = self._predict(case, loaded.prepared, inputs)
            targets = resolve_targets(self.config.target.class_, prediction)
            if self.reduction is not None:
                self.reduction.check(targets, case.case_id)
        except XaimedError as exc:
            return CaseOutcome(self._failed_rows(case, todo, str(exc), type(exc).__name__))
        except Exception as exc:
            # Isolation: whatever breaks while reading or predicting one case fails that case.
            log.debug("case %s failed", case.case_id, exc_info=True)
            if is_out_of_memory(exc):
                message = (
                    f"case {case.case_id}: out of memory while reading or predicting ({exc}); use "
                    "a smaller input (resample, crop_pad, tiling) or a device with more memory."
                )
                return CaseOutcome(self._failed_rows(case, todo, message, "OutOfMemoryError"))
            message = (
                f"case {case.case_id}: cannot be read or predicted ({type(exc).__name__}: {exc})"
            )
            return CaseOutcome(self._failed_rows(case, todo, message, type(exc).__name__))
        shape = tuple(inputs.shape)
        if shape not in self.batch_sizes:
            self.batch_sizes[shape] = choose_batch_size(
                self.counting,
                inputs,
                budget=self.config.runtime.memory_budget_bytes,
                fixed=self.config.runtime.batch_size,
            )
        rows: list[dict[str, Any]] = []
        identity = case_identity(case)
        for position, entry in enumerate(todo):
            try:
                self.stop.check()
                entry_rows = self._run_entry(case, loaded.prepared, inputs, prediction,
                                             entry, targets)  # fmt: skip
            except RunInterrupted as stop:
                for rest in todo[position:]:
                    rows += self._interrupted_rows(case, rest, str(stop))
                return CaseOutcome(rows, interrupted=True)
            if all(row["status"] == "ok" for row in entry_rows):
                write_record(
                    record_path(self.out_dir, case.case_id, entry.output_id),
                    self.keys.key(entry, identity),
                    entry_rows,
                )
            rows += entry_rows
        return CaseOutcome(rows)

    def _run_entry(
        self,
        case: Case,
        prepared: Prepared,
        inputs: torch.Tensor,
        prediction: Prediction,
        entry: MethodEntry,
        targets: list[Target],
    ) -> list[dict[str, Any]]:
        method_rows = [
            self._run_method(case, prepared, inputs, prediction, entry, target, targets)
            for target in targets
        ]
        maps = [row.pop("_heatmap", None) for row in method_rows]
        if len(targets) > 1 and all(m is not None for m in maps):
            method_rows.append(self._write_dominant(case, entry, targets, maps))
        # One progress step per case and method, whatever the number of targets.
        failed = [row for row in method_rows if row["status"] != "ok"]
        if failed:
            self.reporter.advance(
                f"{case.case_id} {entry.output_id}: FAILED: {failed[0]['error']}", failed=True
            )
        else:
            wall = sum(float(row.get("wall_s") or 0) for row in method_rows)
            self.reporter.advance(f"{case.case_id} {entry.output_id}: ok in {wall:.1f} s")
        return method_rows

    def _base_row(self, case: Case, entry: MethodEntry) -> dict[str, Any]:
        return {
            "case_id": case.case_id,
            "source": str(case.path),
            "label": case.label or "",
            "method": entry.output_id,
        }

    def _failed_rows(
        self, case: Case, todo: list[MethodEntry], message: str, kind: str
    ) -> list[dict[str, Any]]:
        rows = []
        for entry in todo:
            rows.append(
                self._base_row(case, entry)
                | {"status": "failed", "error": message, "error_type": kind}
            )
            self.reporter.advance(
                f"{case.case_id} {entry.output_id}: FAILED: {message}", failed=True
            )
        return rows

    def _interrupted_rows(self, case: Case, entry: MethodEntry, cause: str) -> list[dict[str, Any]]:
        return [self._base_row(case, entry) | interrupted_fields(cause)]

    def _predict(self, case: Case, prepared: Prepared, inputs: torch.Tensor) -> Prediction:
        try:
            if self.reduction is not None:
                self.reduction.reset()
            with torch.no_grad():
                outputs = self.counting(inputs)
                if self.reduction is not None:
                    outputs = self.reduction.fix_regions(
                        outputs, inputs, self._case_data(case, prepared)
                    )
        except RuntimeError as exc:
            if is_out_of_memory(exc):
                raise
            first = str(exc).strip().splitlines()[0][:300]
            raise InputError(
                f"case {case.case_id}: the model fails on this input of shape "
                f"{tuple(inputs.shape)} ({first}); check model.input_size and preprocessing."
            ) from None
        prediction = predict(outputs, output_kind=self.model.output, classes=self.model.classes)
        if self.reduction is not None:
            prediction = self.reduction.adjust(prediction)
        return prediction

    def _case_data(self, case: Case, prepared: Prepared) -> CaseData:
        return CaseData(
            case.case_id,
            prepared,
            self.config.preprocessing,
            model_size=self.config.model.input_size,
            base_dir=self.config.base_dir,
            mask=case.mask,
        )

    def _write_dominant(
        self, case: Case, entry: MethodEntry, targets: list[Target], maps: list[Volume]
    ) -> dict[str, Any]:
        """The dominant-class label map: for each voxel, the class with the largest attribution."""
        stem = f"{case.case_id}_{file_part(entry.output_id)}_dominant"
        labels = {i: t.name for i, t in enumerate(targets)}
        dominant = np.argmax(np.stack([m.array for m in maps]), axis=0)
        suffix = ".nii.gz" if self.config.outputs.compress else ".nii"
        path = write_label_map(
            maps[0].with_array(dominant), self.out_dir / case.case_id / f"{stem}{suffix}",
            labels={i: targets[i].name for i in labels},
        )  # fmt: skip
        record = {
            "note": RESEARCH_NOTE,
            "case_id": case.case_id,
            "method": entry.output_id,
            "rule": "argmax over classes of the per-class attribution maps",
            "labels": {str(index): name for index, name in labels.items()},
        }
        sidecar = write_sidecar(record, self.out_dir / case.case_id / f"{stem}.json")
        return self._base_row(case, entry) | {
            "target": "dominant", "status": "ok", "nifti": str(path), "sidecar": str(sidecar),
        }  # fmt: skip

    def _run_method(
        self,
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
        row: dict[str, Any] = self._base_row(case, entry) | {
            "target": target.name,
            "predicted_class": prediction.name_of(prediction.predicted),
            "probability": round(prediction.probabilities[target.index], 6),
            "warning": info.warning or "",
        }
        stem = f"{case.case_id}_{file_part(entry.output_id)}"
        if len(targets) > 1:
            stem += f"_{file_part(target.name)}"
        case_dir = self.out_dir / case.case_id
        t0 = time.perf_counter()
        self.counting.reset()
        self.memory.start()
        try:
            params = info.params_model.model_validate(entry.params)
            seed_everything(self.config.runtime.seed)
            context = MethodContext(
                model=self.counting,
                inputs=inputs,
                target=target.index,
                seed=self.config.runtime.seed,
                batch_size=self.batch_sizes[tuple(inputs.shape)],
                device=self.model.device,
                is_script=self.model.is_script,
                network=self.model.module,
                case=self._case_data(case, prepared),
                progress=lambda line: self._progress(case, line),
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
            peak = self.memory.stop()
            passes = self.counting.count
            if self.config.outputs.nifti:
                suffix = ".nii.gz" if self.config.outputs.compress else ".nii"
                row["nifti"] = str(
                    write_nifti_map(heatmap, case_dir / f"{stem}{suffix}", method=entry.output_id)
                )
            if self.config.outputs.png:
                title = (
                    f"{case.case_id} · {entry.output_id} · target {target.name} · predicted "
                    f"{prediction.name_of(prediction.predicted)} "
                    f"(p={prediction.probabilities[prediction.predicted]:.2f}) · {RESEARCH_NOTE}"
                )
                row["png"] = str(
                    write_overlay_png(
                        prepared.source, heatmap, case_dir / f"{stem}.png", title=title
                    )
                )
            record = self._sidecar(case, prepared, prediction, entry, params, target, heatmap, wall)
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
                        outputs=self.config.outputs,
                        method=entry.output_id,
                        params={
                            "params": record["method"]["params"],
                            "postprocess": record["method"]["postprocess"],
                            "preprocessing": self.config.preprocessing.model_dump(mode="json"),
                        },
                        target=target.name,
                        model_sha256=self.model.sha256,
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
                peak_host_mib=peak.host_mib,
                peak_device_mib=peak.device_mib,
            )
            for message in warnings_:
                if (entry.output_id, message) not in self.warned:  # once per run, not per case
                    self.warned.add((entry.output_id, message))
                    self.reporter.warn(f"{entry.output_id}: {message}")
        except RunInterrupted:
            raise
        except XaimedError as exc:
            self._fail(row, case, entry, str(exc), type(exc).__name__, t0)
        except Exception as exc:
            log.debug("method %s failed on %s", entry.output_id, case.case_id, exc_info=True)
            kind = "OutOfMemoryError" if is_out_of_memory(exc) else type(exc).__name__
            message = (
                f"{entry.output_id} failed on case {case.case_id}: {type(exc).__name__}: {exc}"
            )
            self._fail(row, case, entry, message, kind, t0)
        return row

    def _fail(
        self, row: dict[str, Any], case: Case, entry: MethodEntry, message: str, kind: str,
        t0: float,
    ) -> None:  # fmt: skip
        row.update(status="failed", error=message, error_type=kind,
                   wall_s=round(time.perf_counter() - t0, 3))  # fmt: skip

    def _progress(self, case: Case, line: str) -> None:
        # Long methods report here every few seconds: the place to honour a stop request.
        self.stop.check()
        self.reporter.step(f"{case.case_id} {line}")

    def _sidecar(
        self,
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
            "label": case.label,
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
                "explained_output": self.model.output,
                "spec": self.config.target.class_,
                "segmentation": self.reduction.record() if self.reduction is not None else None,
            },
            "tiling": self.config.tiling.model_dump() if self.config.tiling is not None else None,
            "prediction": prediction.as_dict(self.model.output),
            "model": self.model.describe(),
            "config_sha256": self.config.config_hash(),
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
            "passes": self.counting.count.as_dict(),
            "batch_size": self.batch_sizes[(1, *prepared.array.shape)],
            "wall_s": round(wall, 4),
            "device": str(self.model.device),
            "precision": self.config.runtime.precision,
            "seed": self.config.runtime.seed,
            "software": self.software,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def _check_input(config: Config, case: Case, prepared: Prepared) -> None:
    section = config.model
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
