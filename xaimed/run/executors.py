"""Where cases are explained: in this process, one process per device, or on a Dask cluster.

Every executor takes jobs (a case and the methods it still needs) and hands each finished case's
outcome to ``on_done`` in the parent, which alone writes the shard's manifest. A job is never split
across processes, and outputs are written by the process that computed them, so results do not
depend on the executor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xaimed.casepath import OpenCase
from xaimed.config import Config, MethodEntry, with_overrides
from xaimed.errors import XaimedError
from xaimed.io.case import Case
from xaimed.run.logs import LogSetup
from xaimed.run.options import interrupted_fields
from xaimed.run.signals import StopFlag, stop_on_signals
from xaimed.run.worker import CaseOutcome, Explainer
from xaimed.writers.manifest import ManifestRow, case_row

log = logging.getLogger("xaimed")


@dataclass
class Job:
    """One case of the shard and the methods still to do on it."""

    index: int
    case: Case
    todo: list[MethodEntry]
    done_rows: dict[str, list[ManifestRow]] = field(default_factory=dict)


OnDone = Callable[[Job, CaseOutcome], None]


def _load_or_error(explainer: Explainer, case: Case) -> OpenCase | Exception:
    try:
        return explainer.load(case)
    except Exception as exc:  # handed to explain_case, which records it against the case
        return exc


def run_serial(
    explainer: Explainer, jobs: list[Job], on_done: OnDone, stop: StopFlag, *, prefetch: bool
) -> None:
    """Explain the jobs here, reading the next case in a thread while this one is explained."""
    if not jobs:
        return
    pool = ThreadPoolExecutor(1, thread_name_prefix="xaimed-prefetch") if prefetch else None
    try:

        def ahead(job: Job) -> Future | None:
            return pool.submit(_load_or_error, explainer, job.case) if pool else None

        pending = ahead(jobs[0])
        for position, job in enumerate(jobs):
            if stop.requested:
                break
            loaded = pending.result() if pending is not None else None
            pending = ahead(jobs[position + 1]) if position + 1 < len(jobs) else None
            on_done(job, explainer.explain_case(job.case, job.todo, loaded))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- one process per device


_AHEAD = 2  # jobs queued per device worker: the one it explains and the one it reads meanwhile
_RESTARTS = 2  # a device whose worker keeps dying is given up after this many restarts
_DONE = object()


def _reader(explainer: Explainer, tasks: Any, ready: queue.Queue, stop: StopFlag) -> None:
    """Worker thread: take the next job and read its case while the last one is explained."""
    while not stop.requested:
        try:
            job = tasks.get(timeout=1.0)
        except queue.Empty:
            continue
        if job is None:
            break
        ready.put((job, _load_or_error(explainer, job.case)))
    ready.put(_DONE)


def _device_worker(
    slot: int, config: Config, out_dir: Path, device: str, logs: LogSetup, tasks: Any,
    results: Any, halt: Any,
) -> None:  # fmt: skip
    """Body of a device worker process: explain the jobs it is given until it gets None.

    It stops when the parent sets ``halt`` (a stop request, passed on without signalling) or
    exits, and keeps catching SIGTERM/SIGINT, which a scheduler sends to the whole group: the
    parent decides how the run ends.
    """
    import multiprocessing as mp

    from xaimed.progress import LogReporter

    logs.apply()
    config = with_overrides(config, device=device)
    parent = mp.parent_process()
    stop = StopFlag(halt, parent_alive=parent.is_alive if parent is not None else None)
    with stop_on_signals(stop, second_stops_at_once=False):
        try:
            reporter = LogReporter()
            explainer = Explainer(config, out_dir, reporter=reporter, stop=stop)
        except Exception as exc:
            results.put(("unusable", slot, f"{device}: {exc}"))
            return
        results.put(("ready", slot, None))
        ready: queue.Queue = queue.Queue(maxsize=1)
        thread = threading.Thread(target=_reader, args=(explainer, tasks, ready, stop), daemon=True)
        thread.start()
        while (item := ready.get()) is not _DONE:
            job, loaded = item
            outcome = explainer.explain_case(job.case, job.todo, loaded)
            results.put(("done", slot, (job.index, outcome)))


@dataclass
class _Slot:
    device: str
    process: Any = None
    tasks: Any = None
    held: list[Job] = field(default_factory=list)
    restarts: int = 0
    retired: str | None = None  # why this device is no longer used


def run_devices(
    config: Config,
    out_dir: Path,
    devices: list[str],
    jobs: list[Job],
    on_done: OnDone,
    stop: StopFlag,
    logs: LogSetup,
) -> None:
    """Explain the jobs with one worker process per device, each taking the next free job."""
    import multiprocessing as mp

    context = mp.get_context("spawn")  # CUDA cannot be used in a forked child
    results = context.Queue()
    halt = context.Event()
    waiting = list(jobs)
    slots = [_Slot(device) for device in devices]

    def start(index: int) -> None:
        slot = slots[index]
        slot.tasks = context.Queue()
        slot.process = context.Process(
            target=_device_worker,
            args=(index, config, out_dir, slot.device, logs, slot.tasks, results, halt),
            name=f"xaimed-{slot.device}",
        )
        slot.process.start()

    def dispatch(index: int) -> None:
        slot = slots[index]
        while waiting and not stop.requested and len(slot.held) < _AHEAD and not slot.retired:
            job = waiting.pop(0)
            slot.held.append(job)
            slot.tasks.put(job)

    def handle(kind: str, index: int, payload: Any) -> None:
        slot = slots[index]
        if kind == "unusable":
            log.error("worker on %s cannot start: %s", slot.device, payload)
            slot.retired = str(payload)
            waiting[:0], slot.held = slot.held, []
        elif kind == "ready":
            dispatch(index)
        else:
            job_index, outcome = payload
            job = next((j for j in slot.held if j.index == job_index), None)
            if job is None:  # its worker was already given up for dead
                return
            slot.held.remove(job)
            on_done(job, outcome)
            dispatch(index)

    def drain() -> None:
        while True:
            try:
                handle(*results.get_nowait())
            except queue.Empty:
                return

    def bury_dead() -> None:
        for index, slot in enumerate(slots):
            if slot.retired or slot.process.is_alive():
                continue
            drain()  # whatever it sent before dying counts
            lost, slot.held = slot.held, []
            for job in lost:
                if stop.requested:
                    cause = stop.signal_name or "stop requested"
                    rows = [case_row(job.case, e.output_id, **interrupted_fields(cause))
                            for e in job.todo]  # fmt: skip
                    on_done(job, CaseOutcome(rows, interrupted=True))
                    continue
                message = (
                    f"case {job.case.case_id}: the worker process on {slot.device} died (exit "
                    f"code {slot.process.exitcode}) while holding it, e.g. killed for memory; "
                    "lower runtime.memory_budget or run this case alone."
                )
                log.error(message)
                on_done(job, CaseOutcome(failed_rows(job, message, "WorkerDied")))
            if stop.requested:
                slot.retired = "stopped"
            elif slot.restarts >= _RESTARTS:
                slot.retired = f"its worker died {slot.restarts + 1} times"
                log.error("giving up on %s: %s", slot.device, slot.retired)
            else:
                slot.restarts += 1
                start(index)

    for index in range(len(slots)):
        start(index)
    log.info("explaining on %d worker processes: %s", len(devices), ", ".join(devices))
    try:
        while True:
            if stop.requested:
                halt.set()
            active = [s for s in slots if not s.retired]
            if not any(s.held for s in slots) and (stop.requested or not waiting or not active):
                break
            with contextlib.suppress(queue.Empty):
                handle(*results.get(timeout=0.5))
            bury_dead()
        reasons = "; ".join(sorted({s.retired for s in slots if s.retired}))
        for job in waiting if not stop.requested else []:
            message = f"case {job.case.case_id}: no device worker could run it ({reasons})."
            on_done(job, CaseOutcome(failed_rows(job, message, "WorkerDied")))
    finally:
        halt.set()
        for slot in slots:
            if slot.process is not None and slot.process.is_alive():
                slot.tasks.put(None)
        for slot in slots:
            if slot.process is not None:
                slot.process.join(timeout=60)
                if slot.process.is_alive():
                    slot.process.kill()


def failed_rows(job: Job, message: str, kind: str) -> list[ManifestRow]:
    """Manifest rows failing every method a job still had to do."""
    return [
        case_row(job.case, entry.output_id, status="failed", error=message, error_type=kind)
        for entry in job.todo
    ]


# ---------------------------------------------------------------- Dask


_EXPLAINERS: dict[tuple[str, str, str], Explainer] = {}
_EXPLAINERS_LOCK = threading.Lock()


def explain_on_worker(
    config: Config, out_dir: str, model_sha256: str, case: Case, todo: list[MethodEntry]
) -> CaseOutcome:
    """A Dask task: explain one case with this worker process's (cached) explainer.

    The model is loaded once per worker process and kept; the lock makes the tasks of a
    multi-threaded worker take turns, since a model's hooks and counters are not thread-safe.
    """

    # The model file's hash is in the key: a long-lived worker reloads a changed model.
    key = (config.config_hash(), out_dir, model_sha256)
    with _EXPLAINERS_LOCK:
        explainer = _EXPLAINERS.get(key)
        if explainer is None:
            explainer = Explainer(config, Path(out_dir))
            _EXPLAINERS[key] = explainer
        return explainer.explain_case(case, todo)


def run_dask(
    config: Config,
    out_dir: Path,
    scheduler: str,
    model_sha256: str,
    jobs: list[Job],
    on_done: OnDone,
    stop: StopFlag,
) -> None:
    """Explain the jobs as tasks on the Dask distributed cluster at ``scheduler``."""
    try:
        from distributed import Client
    except ImportError:
        raise XaimedError(
            "--executor dask needs Dask distributed; install it with pip install 'xaimed[dask]'."
        ) from None

    try:
        client = Client(scheduler, timeout="30s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise XaimedError(
            f"--scheduler {scheduler}: cannot connect to a Dask scheduler ({exc}); check the "
            "address (tcp://host:port) and that the scheduler is running."
        ) from None
    try:
        log.info("Dask cluster at %s: %d worker(s)", scheduler,
                 len(client.scheduler_info().get("workers", {})))  # fmt: skip
        futures = {
            client.submit(
                explain_on_worker, config, str(out_dir), model_sha256, job.case, job.todo,
                key=f"xaimed-{job.index}-{job.case.case_id}-{os.getpid()}", pure=False,
            ): job
            for job in jobs
        }  # fmt: skip
        pending = set(futures)
        while pending:
            if stop.requested:
                client.cancel(list(pending))
                break
            # Polling rather than distributed.wait: that needs a default client, and a short
            # sleep keeps the loop responsive to a stop request.
            done = {future for future in pending if future.done()}
            if not done:
                time.sleep(0.2)
                continue
            pending -= done
            for future in sorted(done, key=lambda f: futures[f].index):
                job = futures[future]
                try:
                    outcome = future.result()
                except Exception as exc:
                    message = (
                        f"case {job.case.case_id}: the Dask task failed ({type(exc).__name__}: "
                        f"{exc}); see the worker's log."
                    )
                    outcome = CaseOutcome(failed_rows(job, message, type(exc).__name__))
                on_done(job, outcome)
    finally:
        client.close()
