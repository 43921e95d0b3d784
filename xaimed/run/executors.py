"""Where cases are explained: in this process, one process per device, or on a Dask cluster.

Every executor takes jobs (a case and the methods it still needs) and hands each finished case's
outcome to ``on_done`` in the parent, which alone writes the shard's manifest. A job never split
across processes, and outputs are written by the process that computed them, so results do not
depend on the executor.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xaimed.config import Config, MethodEntry
from xaimed.errors import XaimedError
from xaimed.io.cases import Case
from xaimed.run.logs import LogSetup
from xaimed.run.signals import StopFlag, stop_on_signals

log = logging.getLogger("xaimed")


@dataclass
class Job:
    """One case of the shard and the methods still to do on it."""

    index: int
    case: Case
    todo: list[MethodEntry]
    done_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


OnDone = Callable[[Job, Any], None]  # (job, CaseOutcome)


def _load_or_error(explainer: Any, case: Case) -> Any:
    try:
        return explainer.load(case)
    except Exception as exc:  # handed to explain_case, which records it against the case
        return exc


def run_serial(
    explainer: Any, jobs: list[Job], on_done: OnDone, stop: StopFlag, *, prefetch: bool
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


def _device_worker(
    slot: int, config: Config, out_dir: Path, device: str, logs: LogSetup, tasks: Any,
    results: Any,
) -> None:  # fmt: skip
    """Body of a device worker process: explain the jobs it is given until it gets None."""
    from xaimed.pipeline import Explainer
    from xaimed.progress import LogReporter

    logs.apply()
    config = config.model_copy(deep=True)
    config.runtime.device = device
    stop = StopFlag()
    with stop_on_signals(stop):
        try:
            explainer = Explainer(config, out_dir, reporter=LogReporter(), stop=stop)
        except XaimedError as exc:
            results.put(("unusable", slot, str(exc)))
            return
        results.put(("ready", slot, None))
        pool = ThreadPoolExecutor(1, thread_name_prefix="xaimed-prefetch")
        unknown = object()
        following: Any = tasks.get()
        ahead = pool.submit(_load_or_error, explainer, following.case) if following else None
        while following is not None and following is not unknown:
            job, loading = following, ahead
            try:
                following = tasks.get_nowait()
                ahead = (
                    pool.submit(_load_or_error, explainer, following.case) if following else None
                )
            except queue.Empty:
                following = unknown
            assert loading is not None
            outcome = explainer.explain_case(job.case, job.todo, loading.result())
            results.put(("done", slot, (job.index, outcome)))
            if following is unknown:
                following = tasks.get()
                ahead = (
                    pool.submit(_load_or_error, explainer, following.case) if following else None
                )
        pool.shutdown(cancel_futures=True)


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
    waiting = list(jobs)
    workers: dict[int, tuple[Any, Any]] = {}  # slot -> (process, task queue)
    busy: dict[int, list[Job]] = {slot: [] for slot in range(len(devices))}

    def start(slot: int) -> None:
        tasks = context.Queue()
        process = context.Process(
            target=_device_worker,
            args=(slot, config, out_dir, devices[slot], logs, tasks, results),
            name=f"xaimed-{devices[slot]}",
        )
        process.start()
        workers[slot] = (process, tasks)

    def dispatch(slot: int) -> None:
        while waiting and not stop.requested and len(busy[slot]) < _AHEAD:
            job = waiting.pop(0)
            busy[slot].append(job)
            workers[slot][1].put(job)

    for slot in range(len(devices)):
        start(slot)
    log.info("explaining on %d worker processes: %s", len(devices), ", ".join(devices))
    forwarded = False
    try:
        while any(busy.values()) or (waiting and not stop.requested):
            if stop.requested and not forwarded:
                # The scheduler may have signalled this process only: pass it on.
                forwarded = True
                for process, _ in workers.values():
                    if process.is_alive():
                        os.kill(process.pid, signal.SIGTERM)
            try:
                kind, slot, payload = results.get(timeout=0.5)
            except queue.Empty:
                _replace_dead(workers, busy, devices, on_done, start, dispatch)
                continue
            if kind == "unusable":
                raise XaimedError(payload)
            if kind == "ready":
                dispatch(slot)
                continue
            index, outcome = payload
            job = next(j for j in busy[slot] if j.index == index)
            busy[slot].remove(job)
            on_done(job, outcome)
            dispatch(slot)
    finally:
        for process, tasks in workers.values():
            if process.is_alive():
                tasks.put(None)
        for process, _ in workers.values():
            process.join(timeout=60)
            if process.is_alive():
                process.kill()


def _replace_dead(workers, busy, devices, on_done, start, dispatch) -> None:
    """A worker that died (the OOM killer, a crash) fails the cases it held; it is replaced."""
    from xaimed.pipeline import CaseOutcome

    for slot, (process, _) in list(workers.items()):
        if process.is_alive() or process.exitcode is None:
            continue
        lost, busy[slot] = busy[slot], []
        for job in lost:
            message = (
                f"case {job.case.case_id}: the worker process on {devices[slot]} died (exit code "
                f"{process.exitcode}) while holding it, e.g. killed for memory; lower "
                "runtime.memory_budget or run this case alone."
            )
            log.error(message)
            on_done(job, CaseOutcome(failed_rows(job, message, "WorkerDied")))
        start(slot)


def failed_rows(job: Job, message: str, kind: str) -> list[dict[str, Any]]:
    """Manifest rows failing every method a job still had to do."""
    return [
        {"case_id": job.case.case_id, "source": str(job.case.path),
         "label": job.case.label or "", "method": entry.output_id, "status": "failed",
         "error": message, "error_type": kind}
        for entry in job.todo
    ]  # fmt: skip


# ---------------------------------------------------------------- Dask


_EXPLAINERS: dict[tuple[str, str], Any] = {}
_EXPLAINERS_LOCK = threading.Lock()


def explain_on_worker(config: Config, out_dir: str, case: Case, todo: list[MethodEntry]) -> Any:
    """A Dask task: explain one case with this worker process's (cached) explainer.

    The model is loaded once per worker process and kept; the lock makes the tasks of a
    multi-threaded worker take turns, since a model's hooks and counters are not thread-safe.
    """
    from xaimed.pipeline import Explainer

    key = (config.config_hash(), out_dir)
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
    from xaimed.pipeline import CaseOutcome

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
                explain_on_worker, config, str(out_dir), job.case, job.todo,
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
