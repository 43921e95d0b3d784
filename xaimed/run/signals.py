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
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("xaimed")

# Exit status of a run stopped by SIGTERM/SIGINT: EX_TEMPFAIL from sysexits.h ("try again
# later"); distinct from 0, 1, 2 and the shell's 128+signal, so a job script can requeue on it.
EXIT_INTERRUPTED = 75


class RunInterrupted(Exception):
    """Raised inside a method when a stop was requested; the method's work is discarded."""


class StopFlag:
    """Set once a stop is requested; thread-safe."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    def set(self, name: str) -> None:
        """Request a stop, naming the cause for the records."""
        if self.signal_name is None:
            self.signal_name = name
        self._event.set()

    @property
    def requested(self) -> bool:
        """True once a stop was requested."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise RunInterrupted when a stop was requested (called at safe points)."""
        if self._event.is_set():
            raise RunInterrupted(self.signal_name or "stop requested")


@contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[StopFlag]:
    """Route SIGTERM and SIGINT to ``flag`` for the block (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        log.warning(
            "%s received: finishing or discarding the work in flight, then stopping; "
            "run the same command again to resume (a second %s stops at once)",
            name,
            name,
        )
        flag.set(name)
        # The next signal of this kind gets the default action (terminate now).
        signal.signal(signum, previous[signum])

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
