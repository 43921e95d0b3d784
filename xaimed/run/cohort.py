"""A cohort run: the cases of one shard, what is done already, the executor, the manifest.

The parent process alone writes the shard's manifest (``manifest.csv``, or
``manifest-shard-I-of-N.csv`` when sharded, so no two processes write one file), with the rows
in case order whatever order the executor finished them in; it is rewritten as cases finish, at
most once per 20 times its last write took (see ``_Collector.flush``).
Work whose completion record matches is not redone; its rows are copied from the record and
marked ``resumed``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xaimed.config import Config, with_overrides
from xaimed.errors import ConfigError, XaimedError
from xaimed.io.case import Case
from xaimed.io.cases import discover_cases
from xaimed.io.safety import check_output_folder
from xaimed.model import LoadedModel, load_model, resolve_device
from xaimed.pacs.source import PacsSource, is_pacs_input, remote_cases
from xaimed.pacs.store import store_for_run
from xaimed.progress import Reporter
from xaimed.run.executors import Job, run_dask, run_devices, run_serial
from xaimed.run.lock import run_lock
from xaimed.run.logs import LogSetup
from xaimed.run.options import RunOptions, interrupted_fields
from xaimed.run.records import WorkKeys, case_identity, read_record, record_path
from xaimed.run.result import RunResult
from xaimed.run.signals import StopFlag, stop_on_signals
from xaimed.run.worker import CaseOutcome, Explainer
from xaimed.writers.atomic import atomic_path
from xaimed.writers.manifest import ManifestRow, case_row, write_manifest

log = logging.getLogger("xaimed")

FAIL_FAST = "--fail-fast"


def choose_devices(options: RunOptions, config: Config) -> list[str] | None:
    """One worker per device when asked (``--devices``) or when several GPUs are visible."""
    if options.devices:
        for device in options.devices:
            _check_device(device)
        return options.devices if len(options.devices) > 1 else None
    if options.executor == "local" and config.runtime.device in ("auto", "cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count > 1:
            log.info("%d GPUs visible: one worker process per GPU (--devices to choose)", count)
            return [f"cuda:{i}" for i in range(count)]
    return None


def _check_case_ids(cases: list[Case]) -> None:
    """Case ids name folders next to the run's own files: refuse ids that would clash."""
    reserved = ("logs", "config.json")
    clashes = [
        c.case_id for c in cases if c.case_id in reserved or c.case_id.startswith("manifest")
    ]
    if clashes:
        raise XaimedError(
            f"case id(s) {', '.join(clashes)} clash with the run's own files (logs/, config.json, "
            "manifest*.csv); rename those cases (the case list's case_id or the file name)."
        )


def _check_device(device: str) -> None:
    """Refuse a ``--devices`` entry this machine cannot use, before any worker starts."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise XaimedError(f"--devices: {device!r} is not a device; use cpu, cuda or cuda:N.")
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise XaimedError(
                f"--devices: {device} does not exist here ({count} CUDA device(s) visible); "
                "list visible devices only."
            )


def plan_jobs(
    cases: list[Case], config: Config, out_dir: Path, model_sha256: str, overwrite: bool
) -> list[Job]:
    """For every case, the methods still to do and the rows of those already done."""
    keys = WorkKeys(config, model_sha256)
    jobs = []
    for index, case in enumerate(cases):
        job = Job(index, case, [])
        identity = None if overwrite else case_identity(case)
        for entry in config.methods:
            record = None
            if identity is not None:
                path = record_path(out_dir, case.case_id, entry.output_id)
                record = read_record(path, keys.key(entry, identity), out_dir)
            if record is None:
                job.todo.append(entry)
            else:
                job.done_rows[entry.output_id] = [
                    ManifestRow(**r) | ManifestRow(resumed="yes") for r in record.rows
                ]
        jobs.append(job)
    return jobs


@dataclass
class _Collector:
    """Gathers each case's rows in case order and keeps the manifest current."""

    config: Config
    result: RunResult
    reporter: Reporter
    stop: StopFlag
    fail_fast: bool
    by_case: dict[int, list[ManifestRow]] = field(default_factory=dict)
    # Executors other than this process report no per-method progress: count it here.
    advance_rows: bool = False
    _last_flush: float = 0.0
    _flush_cost: float = 0.0

    def rows_of(self, job: Job, outcome: CaseOutcome) -> list[ManifestRow]:
        fresh: dict[str, list[ManifestRow]] = {}
        for row in outcome.rows:
            fresh.setdefault(row["method"], []).append(row)
        rows = []
        for entry in self.config.methods:
            rows += job.done_rows.get(entry.output_id, []) + fresh.get(entry.output_id, [])
        # The case's place in the unsharded order: what `xaimed merge` sorts by.
        position = self.result.shard.index + job.index * self.result.shard.count
        return [ManifestRow(case_index=position) | row for row in rows]

    def pending(self, job: Job) -> None:
        """Rows for a case not yet done, so a killed run's manifest still lists it."""
        rows = [case_row(job.case, e.output_id, status="pending") for e in job.todo]
        self.by_case[job.index] = self.rows_of(job, CaseOutcome(rows))

    def done(self, job: Job, outcome: CaseOutcome) -> None:
        rows = self.rows_of(job, outcome)
        self.by_case[job.index] = rows
        self.flush()
        if self.advance_rows:
            for row in outcome.rows:
                status = row["status"]
                line = status if status == "ok" else f"{status}: {row['error']}"
                self.reporter.advance(
                    f"{job.case.case_id} {row['method']}: {line}", failed=status == "failed"
                )
        failed = any(r["status"] == "failed" for r in rows)
        state = "failed" if failed else "interrupted" if outcome.interrupted else "done"
        self.reporter.case_done(f"case {job.case.case_id}: {state}")
        if failed and self.fail_fast and not self.stop.requested:
            log.error("case %s failed and --fail-fast is set: stopping", job.case.case_id)
            self.stop.set(FAIL_FAST)

    def flush(self, *, force: bool = False) -> None:
        """Rewrite the manifest, at most once per 20 times its last write took.

        Rewriting it after every case costs O(cases) each time, quadratic over a cohort of
        thousands; spacing the writes keeps that under 5 % of the run while small manifests are
        still rewritten after every case. The completion records, not the manifest, decide what
        a resumed run skips, so a manifest a few cases behind loses nothing.
        """
        now = time.monotonic()
        if not force and now - self._last_flush < 20 * self._flush_cost:
            return
        self.result.rows = [r for i in sorted(self.by_case) for r in self.by_case[i]]
        write_manifest(self.result.rows, self.result.manifest)
        self._last_flush = time.monotonic()
        self._flush_cost = self._last_flush - now


def run_cohort(
    input_path: Path,
    config: Config,
    out_dir: Path,
    options: RunOptions,
    reporter: Reporter,
) -> RunResult:
    """Run ``config`` on this shard's cases of ``input_path``; see ``xaimed.pipeline.explain``."""
    if options.executor == "dask" and not options.scheduler:
        raise XaimedError("--executor dask needs --scheduler ADDRESS (tcp://host:port).")
    # Absolute paths: workers elsewhere (Dask) may run in another folder, and records must
    # find their files from whatever folder a resumed run starts in.
    check_output_folder(out_dir, input_path)
    out_dir = out_dir.resolve()
    pacs = PacsSource.for_run(config, out_dir)
    if pacs is not None:
        pacs.check()
    if config.outputs.store is not None and not options.dry_run:
        store_for_run(config).check()
    columns = config.preprocessing.channels.columns
    if is_pacs_input(input_path):
        if columns:
            raise ConfigError(
                "INPUT pacs: gives one series per study, but preprocessing.channels names "
                "case-list columns; give a case list with those columns."
            )
        if pacs is None:
            raise ConfigError(
                "INPUT pacs: lists the studies of pacs.query on pacs.server, but the config has "
                "no pacs section; add one."
            )
        all_cases = pacs.query_cases()
    else:
        input_path = input_path.resolve()
        all_cases = remote_cases(
            discover_cases(input_path, exclude=out_dir, channels=columns), pacs
        )
    _check_case_ids(all_cases)
    cases = options.shard.select(all_cases)
    log.info(
        "%d case(s) in %s; shard %s takes %d", len(all_cases), input_path, options.shard,
        len(cases),
    )  # fmt: skip
    if options.devices and len(options.devices) == 1:
        config = with_overrides(config, device=options.devices[0])
    devices = choose_devices(options, config)
    here = options.executor == "local" and devices is None
    # Elsewhere the workers load the model on their devices; here it is loaded once on the CPU
    # so that an unusable model stops the run before any worker starts, and for its hash.
    model = load_model(
        config.model, resolve_device(config.runtime.device) if here else torch.device("cpu")
    )
    result = RunResult(out_dir, shard=options.shard)
    if options.dry_run:
        jobs = plan_jobs(cases, config, out_dir, model.sha256, options.overwrite)
        result.plan = _plan_table(jobs)
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    # Locked before reading the completion records: another run may be writing them.
    with run_lock(out_dir, options.shard.suffix):
        jobs = plan_jobs(cases, config, out_dir, model.sha256, options.overwrite)
        return _run_locked(config, out_dir, options, reporter, devices, model, jobs, result)


def _run_locked(
    config: Config,
    out_dir: Path,
    options: RunOptions,
    reporter: Reporter,
    devices: list[str] | None,
    model: LoadedModel,
    jobs: list[Job],
    result: RunResult,
) -> RunResult:
    """The run proper, while this process holds the output folder's lock."""
    stop = options.stop or StopFlag()
    with atomic_path(out_dir / "config.json") as tmp:
        tmp.write_text(json.dumps(config.model_dump(mode="json", by_alias=True), indent=2) + "\n")
    collector = _Collector(config, result, reporter, stop, options.fail_fast)
    collector.advance_rows = options.executor == "dask" or devices is not None
    todo = [job for job in jobs if job.todo]
    for job in jobs:
        if job.todo:
            collector.pending(job)
        else:
            collector.by_case[job.index] = collector.rows_of(job, CaseOutcome([]))
    _clear_stale_manifest(result.manifest)
    collector.flush(force=True)
    skipped = len(jobs) - len(todo)
    if skipped:
        log.info("%d case(s) done by an earlier run are skipped (--overwrite redoes them)", skipped)
    reporter.start(sum(len(j.todo) for j in todo), cases=len(todo))
    with stop_on_signals(stop):
        _execute(config, out_dir, options, devices, model, todo, collector, reporter, stop)
    for job in todo:
        if any(r["status"] == "pending" for r in collector.by_case[job.index]):
            collector.by_case[job.index] = collector.rows_of(job, _unfinished(job, stop))
    collector.flush(force=True)
    result.interrupted = stop.requested and stop.signal_name != FAIL_FAST
    reporter.finish()
    return result


def _execute(
    config: Config,
    out_dir: Path,
    options: RunOptions,
    devices: list[str] | None,
    model: LoadedModel,
    jobs: list[Job],
    collector: _Collector,
    reporter: Reporter,
    stop: StopFlag,
) -> None:
    if not jobs:
        return
    if options.executor == "dask":
        if options.scheduler is None:  # refused at the start of run_cohort
            raise RuntimeError("--executor dask without --scheduler")
        run_dask(config, out_dir, options.scheduler, model.sha256, jobs, collector.done, stop)
    elif devices is not None:
        setup = options.logs or LogSetup(level=logging.getLogger().getEffectiveLevel())
        run_devices(config, out_dir, devices, jobs, collector.done, stop, setup)
    else:
        explainer = Explainer(config, out_dir, reporter=reporter, stop=stop, model=model)
        run_serial(explainer, jobs, collector.done, stop, prefetch=options.prefetch)


def _clear_stale_manifest(manifest: Path) -> None:
    # A process killed while rewriting its manifest leaves the temporary; only this shard
    # writes this manifest, so its temporaries are stale.
    for tmp in manifest.parent.glob(f".tmp-*-{manifest.name}"):
        tmp.unlink(missing_ok=True)


def _unfinished(job: Job, stop: StopFlag) -> CaseOutcome:
    """Rows for a case the run never finished: interrupted by a signal, or not run."""
    if stop.signal_name == FAIL_FAST:
        fields = {
            "status": "not_run",
            "error_type": "NotRun",
            "error": "not run: --fail-fast stopped the run after a case failed",
        }
    else:
        fields = interrupted_fields(stop.signal_name or "stop requested")
    return CaseOutcome(
        [case_row(job.case, entry.output_id, **fields) for entry in job.todo],
        interrupted=stop.signal_name != FAIL_FAST,
    )


def _plan_table(jobs: list[Job]) -> list[dict[str, Any]]:
    return [
        {
            "case_id": job.case.case_id,
            "source": job.case.source,
            "run": [e.output_id for e in job.todo],
            "skip": sorted(job.done_rows),
        }
        for job in jobs
    ]
