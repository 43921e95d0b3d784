"""Stop a run cleanly on SIGTERM or SIGINT, so that a pre-empted job can be requeued.

Schedulers send SIGTERM some seconds before SIGKILL (Slurm's ``--signal``, ``scancel``, a
pre-emption); Ctrl-C sends SIGINT. The handler only sets a flag: the run checks it before each
case and method, and long methods check it at every progress report, so the piece in flight is
either finished (gradient methods take seconds) or discarded before any of its files is written.
A second signal is not caught, so a user can still force an immediate stop.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger("xaimed")

# Exit status of a run stopped by SIGTERM/SIGINT: EX_TEMPFAIL from sysexits.h ("try again
# later"); distinct from 0, 1, 2 and the shell's 128+signal, so a job script can requeue on it.
EXIT_INTERRUPTED = 75


class RunInterrupted(Exception):
    """Raised inside a method when a stop was requested; the method's work is discarded."""


class StopFlag:
    """Set once a stop is requested; thread-safe.

    ``event`` may be shared with other processes (a ``multiprocessing`` Event): a parent sets it
    to stop its workers without signalling them. ``parent_alive`` (in a worker) makes the death
    of the parent process a stop request, so a worker never outlives a killed run.
    """

    def __init__(
        self, event: Any | None = None, parent_alive: Callable[[], bool] | None = None
    ) -> None:
        self._event = event if event is not None else threading.Event()
        self._parent_alive = parent_alive
        self.signal_name: str | None = None

    def set(self, name: str) -> None:
        """Request a stop, naming the cause for the records."""
        if self.signal_name is None:
            self.signal_name = name
        self._event.set()

    @property
    def requested(self) -> bool:
        """True once a stop was requested."""
        if self._event.is_set():
            return True
        if self._parent_alive is not None and not self._parent_alive():
            self.set("the parent process exited")
            return True
        return False

    def check(self) -> None:
        """Raise RunInterrupted when a stop was requested (called at safe points)."""
        if self.requested:
            raise RunInterrupted(self.signal_name or "stop requested")


_IMMEDIATE = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}


@contextmanager
def stop_on_signals(flag: StopFlag, *, second_stops_at_once: bool = True) -> Iterator[StopFlag]:
    """Route SIGTERM and SIGINT to ``flag`` for the block (main thread only; else a no-op).

    A signal the process was started to ignore (SIGINT of a background job) stays ignored.
    With ``second_stops_at_once`` the next signal after the first takes its default action;
    worker processes keep catching (their parent decides when to give up on them).
    """
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not flag.requested:
            log.warning(
                "%s received: finishing or discarding the work in flight, then stopping; "
                "run the same command again to resume%s",
                name,
                f" (a second {name} stops at once)" if second_stops_at_once else "",
            )
        flag.set(name)
        if second_stops_at_once:
            signal.signal(signum, _IMMEDIATE[signal.Signals(signum)])

    for signum in (signal.SIGTERM, signal.SIGINT):
        old = signal.getsignal(signum)
        if old is signal.SIG_IGN:
            continue
        previous[signum] = old
        signal.signal(signum, handler)
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
