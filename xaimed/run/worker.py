"""The case worker: explains cases with one loaded model in one process.

Every executor (:mod:`xaimed.run.executors`) hands its jobs to an :class:`Explainer`. It takes a
case along the one case path (:mod:`xaimed.casepath`): open, predict, then for each method
attribute, write the outputs and a completion record. One case failing (unreadable file, wrong
shape, a method that cannot run) is returned as failed rows with their reasons and the run goes
on.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xaimed.casepath import OpenCase, attribute, open_case
from xaimed.config import Config, MethodEntry
from xaimed.engine.batching import choose_batch_size, size_slice_calls
from xaimed.engine.counting import CountingModel
from xaimed.engine.perturb import is_out_of_memory
from xaimed.engine.scoring import build_scorer
from xaimed.engine.targets import TargetReduction
from xaimed.errors import InputError, XaimedError
from xaimed.finite import require_finite_output
from xaimed.io.case import Case
from xaimed.io.safety import unique_file_parts
from xaimed.methods import registry
from xaimed.model import LoadedModel, load_model, resolve_device
from xaimed.models.agreement import member_agreement
from xaimed.models.members import member_scorer
from xaimed.models.slicewise import array_axis, slice_case
from xaimed.pacs.source import PacsSource
from xaimed.pacs.store import output_files, store_for_run
from xaimed.prediction import Prediction, Target, predict, resolve_targets
from xaimed.progress import LogReporter, Reporter
from xaimed.run.memory import PeakMeter
from xaimed.run.options import interrupted_fields
from xaimed.run.records import (
    WorkKeys,
    case_identity,
    clear_stale_temporaries,
    record_path,
    write_record,
)
from xaimed.run.sidecars import (
    RESEARCH_NOTE,
    channel_record,
    dominant_sidecar,
    method_sidecar,
    software_versions,
)
from xaimed.run.signals import RunInterrupted, StopFlag
from xaimed.volume import Volume
from xaimed.writers.base import MapOutput
from xaimed.writers.dicom_outputs import dicom_source_record, is_dicom, series_uid
from xaimed.writers.manifest import ManifestRow, case_row, check_row
from xaimed.writers.naming import file_part
from xaimed.writers.outputs import WRITERS
from xaimed.writers.sidecar import write_sidecar
from xaimed.writers.volume import write_label_volume, write_map_volume

log = logging.getLogger("xaimed")


@dataclass
class CaseOutcome:
    """The rows of one case's work, and whether a stop request cut it short."""

    rows: list[ManifestRow]
    interrupted: bool = False


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
        self.scorer = build_scorer(self.model.module, config, is_script=self.model.is_script)
        self.counting: CountingModel = self.scorer.counting
        # Between the counting wrapper and the (possibly tiled) model; reduces segmentation maps.
        self.reduction: TargetReduction | None = self.scorer.reduction
        self.software = software_versions()
        self.batch_sizes: dict[tuple[int, ...], int] = {}
        self.warned: set[tuple[str, str]] = set()
        self.memory = PeakMeter(self.model.device)
        self.keys = WorkKeys(config, self.model.sha256)
        # Studies on a DICOM server are retrieved when read; derived series stored back.
        self.pacs = PacsSource.for_run(config, out_dir)
        self.store = store_for_run(config) if config.outputs.store is not None else None

    def load(self, case: Case) -> OpenCase:
        """Read and preprocess ``case`` (safe to run in a background thread); a study on a DICOM
        server is retrieved first."""
        if case.format == "pacs" and self.pacs is not None:
            case = self.pacs.resolve(case)
        return open_case(case, self.config, self.model.prepare)

    def explain_case(
        self, case: Case, todo: list[MethodEntry], loaded: OpenCase | Exception | None = None
    ) -> CaseOutcome:
        """Run ``todo`` on ``case``; each method that fully succeeds gets a completion record.

        ``loaded`` is the case read ahead of time, or the error reading it raised.
        """
        with warnings.catch_warnings():
            # Captum warns on every call that it set requires_grad and installed hooks; both
            # are expected here and would bury the messages that matter.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\.")
            try:
                return self._explain_case(case, todo, loaded)
            finally:
                if case.format == "pacs" and self.pacs is not None:
                    self.pacs.release(case)

    def _explain_case(
        self, case: Case, todo: list[MethodEntry], loaded: OpenCase | Exception | None
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
            opened = (loaded or self.load(case)).on(self.model.device)
            prediction = self._predict(opened)
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
        shape = tuple(opened.inputs.shape)
        if shape not in self.batch_sizes:
            self.batch_sizes[shape] = choose_batch_size(
                self.counting,
                opened.inputs,
                budget=self.config.runtime.memory_budget_bytes,
                fixed=self.config.runtime.batch_size,
            )
        else:
            # A cached batch size skips the slice-wise call sizing inside choose_batch_size; the
            # slice axis (and so the plane size) may differ between cases of one shape.
            size_slice_calls(self.counting, opened.inputs, self.config.runtime.memory_budget_bytes)
        opened = opened.sized(self.batch_sizes[shape])
        rows: list[ManifestRow] = []
        identity = case_identity(case)
        for position, entry in enumerate(todo):
            try:
                self.stop.check()
                entry_rows = self._run_entry(opened, prediction, entry, targets)
            except RunInterrupted as stop:
                for rest in todo[position:]:
                    rows += self._interrupted_rows(case, rest, str(stop))
                return CaseOutcome(rows, interrupted=True)
            if all(row["status"] == "ok" for row in entry_rows):
                write_record(
                    record_path(self.out_dir, case.case_id, entry.output_id),
                    self.keys.key(entry, identity),
                    entry_rows,
                    self.out_dir,
                )
            rows += entry_rows
        return CaseOutcome(rows)

    def _run_entry(
        self, opened: OpenCase, prediction: Prediction, entry: MethodEntry, targets: list[Target]
    ) -> list[ManifestRow]:
        case = opened.case
        # One file-name part per target, distinct even where class names clean up alike.
        parts = unique_file_parts([t.name for t in targets], file_part, reserved={"dominant"})
        done = [
            self._run_method(opened, prediction, entry, target, targets, parts)
            for target in targets
        ]
        method_rows = [row for row, _ in done]
        maps = [heatmap for _, heatmap in done if heatmap is not None]
        if len(targets) > 1 and len(maps) == len(targets):
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

    def _failed_rows(
        self, case: Case, todo: list[MethodEntry], message: str, kind: str
    ) -> list[ManifestRow]:
        rows = []
        for entry in todo:
            rows.append(
                case_row(case, entry.output_id, status="failed", error=message, error_type=kind)
            )
            self.reporter.advance(
                f"{case.case_id} {entry.output_id}: FAILED: {message}", failed=True
            )
        return rows

    def _interrupted_rows(self, case: Case, entry: MethodEntry, cause: str) -> list[ManifestRow]:
        return [case_row(case, entry.output_id, **interrupted_fields(cause))]

    def _predict(self, opened: OpenCase) -> Prediction:
        case, inputs = opened.case, opened.inputs
        slice_case(self.counting, opened.prepared.geometry.axcodes, case.case_id)
        try:
            if self.reduction is not None:
                self.reduction.reset()
            with torch.no_grad():
                outputs = self.counting(inputs)
                if self.reduction is not None:
                    outputs = self.reduction.fix_regions(outputs, inputs, opened.data)
            require_finite_output(outputs, inputs, where=f"case {case.case_id}")
        except RuntimeError as exc:
            if is_out_of_memory(exc):
                raise
            first = str(exc).strip().splitlines()[0][:300]
            shape = tuple(inputs.shape)
            if self.config.model.spatial_dims == 2:
                shape = shape[:-1]  # the 2D network's input: the plane's depth axis is dropped
            sliced = self.config.model.slicewise
            if sliced is not None:
                # What the 2D network saw: slices across the configured axis, not the volume.
                axis = array_axis(sliced.axis, opened.prepared.geometry.axcodes)
                plane = " x ".join(str(n) for i, n in enumerate(shape[2:]) if i != axis)
                raise InputError(
                    f"case {case.case_id}: the 2D network of model.slicewise fails on this "
                    f"case's {sliced.axis} slices of {plane} pixels (array axis {axis} of the "
                    f"input {shape}, oriented {opened.prepared.geometry.axcodes}; {first}); "
                    "check model.slicewise.axis and preprocessing."
                ) from None
            raise InputError(
                f"case {case.case_id}: the model fails on this input of shape "
                f"{shape} ({first}); check model.input_size and preprocessing."
            ) from None
        prediction = predict(outputs, output_kind=self.model.output, classes=self.model.classes)
        if self.reduction is not None:
            prediction = self.reduction.adjust(prediction)
        return prediction

    def _write_dominant(
        self, case: Case, entry: MethodEntry, targets: list[Target], maps: list[Volume]
    ) -> ManifestRow:
        """The dominant-class label map: for each voxel, the class with the largest attribution."""
        stem = f"{case.case_id}_{file_part(entry.output_id)}_dominant"
        labels = {i: t.name for i, t in enumerate(targets)}
        dominant = np.argmax(np.stack([m.array for m in maps]), axis=0)
        path = write_label_volume(
            maps[0].with_array(dominant), self.out_dir / case.case_id, stem, self.config.outputs,
            labels={i: targets[i].name for i in labels},
        )  # fmt: skip
        audit = dominant_sidecar(case, entry, labels)
        sidecar = write_sidecar(audit, self.out_dir / case.case_id / f"{stem}.json")
        return case_row(
            case, entry.output_id, target="dominant", status="ok", nifti=str(path),
            sidecar=str(sidecar),
        )  # fmt: skip

    def _member_spread(
        self, opened: OpenCase, entry: MethodEntry, target: Target, case_dir: Path, stem: str
    ) -> dict[str, Any] | None:
        """For an ensemble: each member's map (one member after another), their per-voxel
        standard deviation (written next to the map) and their agreement."""
        if not self.model.members or self.reduction is None:
            return None
        maps = []
        for member in self.model.members:
            scorer = member_scorer(member, self.config, self.reduction,
                                   is_script=self.model.is_script)  # fmt: skip
            one = attribute(scorer, opened, entry, target.index, seed=self.config.runtime.seed)
            maps.append(one.heatmap.array)
        spread = opened.prepared.source.with_array(np.std(np.stack(maps), axis=0))
        path = write_map_volume(
            spread, case_dir, f"{stem}_member_std", self.config.outputs,
            method=f"{entry.output_id} std",
        )  # fmt: skip
        return {"member_std_nifti": str(path), **member_agreement(maps)}

    def _run_method(
        self,
        opened: OpenCase,
        prediction: Prediction,
        entry: MethodEntry,
        target: Target,
        targets: list[Target],
        parts: dict[str, str],
    ) -> tuple[ManifestRow, Volume | None]:
        """The row of ``entry`` on one target, and its map when it succeeded."""
        case, prepared = opened.case, opened.prepared
        info = registry.method(entry.name)  # the config validated the name at load
        row = case_row(
            case, entry.output_id, target=target.name,
            predicted_class=prediction.name_of(prediction.predicted),
            probability=round(prediction.probabilities[target.index], 6),
            warning=info.warning or "",
        )  # fmt: skip
        written: Volume | None = None
        stem = f"{case.case_id}_{file_part(entry.output_id)}"
        if len(targets) > 1:
            stem += f"_{parts[target.name]}"
        case_dir = self.out_dir / case.case_id
        t0 = time.perf_counter()
        self.counting.reset()
        self.memory.start()
        try:
            result = attribute(
                self.scorer, opened, entry, target.index, seed=self.config.runtime.seed,
                progress=lambda line: self._progress(case, line),
            )  # fmt: skip
            heatmap, params = result.heatmap, result.params
            wall = time.perf_counter() - t0
            peak = self.memory.stop()
            passes = self.counting.count
            # After the ensemble's own time and memory are taken: member maps are extra work.
            spread = self._member_spread(opened, entry, target, case_dir, stem)
            audit = method_sidecar(
                case=case, prepared=prepared, prediction=prediction, entry=entry, info=info,
                params=params, target=target, heatmap=heatmap, wall=wall, config=self.config,
                model=self.model, reduction=self.reduction, passes=self.counting.count.as_dict(),
                batch_size=self.batch_sizes[(1, *prepared.array.shape)], software=self.software,
            )  # fmt: skip
            if spread is not None:
                audit["ensemble"] = spread
            warnings_ = [info.warning] if info.warning else []
            details = dict(result.details)
            warnings_ += details.pop("warnings", [])
            audit["method_details"] = details
            audit["warnings"] = warnings_
            row["warning"] = " | ".join(warnings_)
            if is_dicom(prepared.source):
                row["series_uid"] = series_uid(prepared.source)
                audit["source"]["dicom"] = dicom_source_record(prepared.source)
            audit["warnings"] += prepared.source.meta.get("warnings", [])
            shares = result.channel_shares
            if result.channel_maps:
                audit["channels"] = channel_record(result, stem, self.config.outputs)
                if "channels" in prepared.source.meta:  # a multi-sequence case's files
                    audit["source"]["channels"] = prepared.source.meta["channels"]
            if shares is not None:
                row["channel_shares"] = json.dumps({k: round(v, 6) for k, v in shares.items()})
                row["top_channel"] = max(shares, key=shares.__getitem__)
            out = MapOutput(
                source=prepared.source,
                heatmap=heatmap,
                case_dir=case_dir,
                stem=stem,
                method=entry.output_id,
                target=target.name,
                title=(
                    f"{case.case_id} · {entry.output_id} · target {target.name} · predicted "
                    f"{prediction.name_of(prediction.predicted)} "
                    f"(p={prediction.probabilities[prediction.predicted]:.2f}) · {RESEARCH_NOTE}"
                ),
                outputs=self.config.outputs,
                derivation={
                    "params": audit["method"]["params"],
                    "postprocess": audit["method"]["postprocess"],
                    "preprocessing": self.config.preprocessing.model_dump(mode="json"),
                },
                model_sha256=self.model.sha256,
                sidecar=audit,
                channel_maps=result.channel_maps,
            )
            for writer in WRITERS:
                if writer.wanted(out):
                    written_columns = writer.write(out)
                    check_row(written_columns)
                    row.update(written_columns)  # type: ignore[typeddict-item]
            if self.store is not None and is_dicom(prepared.source):
                # Raises StoreError (this map fails, no completion record: a rerun stores it).
                self.store.store(output_files(row), case_id=case.case_id)
                row["stored"] = "yes"
            written = heatmap
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
        return row, written

    def _fail(
        self, row: ManifestRow, case: Case, entry: MethodEntry, message: str, kind: str,
        t0: float,
    ) -> None:  # fmt: skip
        row.update(status="failed", error=message, error_type=kind,
                   wall_s=round(time.perf_counter() - t0, 3))  # fmt: skip

    def _progress(self, case: Case, line: str) -> None:
        # Long methods report here every few seconds: the place to honour a stop request.
        self.stop.check()
        self.reporter.step(f"{case.case_id} {line}")
