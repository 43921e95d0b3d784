"""Progress over cases and methods: a rich bar on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import logging
import time
from typing import Protocol

log = logging.getLogger("xaimed")


class Reporter(Protocol):
    """What the runner tells whoever watches it.

    ``start`` gives the pieces of work (case x method) and the cases of the shard still to do;
    ``advance`` follows each piece and ``case_done`` each case.
    """

    def start(self, total: int, cases: int = 0) -> None: ...

    def case_done(self, message: str) -> None: ...

    def step(self, description: str) -> None: ...

    def advance(self, message: str, failed: bool = False) -> None: ...

    def warn(self, message: str) -> None: ...

    def finish(self) -> None: ...


class LogReporter:
    """Plain log lines (for batch jobs and non-terminals), with an ETA after each unit of work."""

    def __init__(self, logger: logging.Logger = log, *, eta_of: str = "shard") -> None:
        # What the ETA after each case covers: an explain shard's cases, or (evaluate, which
        # has no shards) the run's.
        self.eta_label = f"{eta_of} ETA".strip()
        self.logger = logger
        self.total = 0
        self.done = 0
        self.cases = 0
        self.cases_done = 0
        self.started = False
        self.t0 = time.monotonic()

    def start(self, total: int, cases: int = 0) -> None:
        self.total, self.done, self.t0 = total, 0, time.monotonic()
        self.cases, self.cases_done = cases, 0
        self.started = True

    def case_done(self, message: str) -> None:
        self.cases_done += 1
        elapsed = time.monotonic() - self.t0
        left = self.cases - self.cases_done
        eta = elapsed / self.cases_done * left if self.cases_done else 0.0
        self.logger.info(
            "cases %d/%d: %s (%s %.0f s)",
            self.cases_done, self.cases, message, self.eta_label, eta,
        )  # fmt: skip

    def step(self, description: str) -> None:
        self.logger.debug(description)

    def advance(self, message: str, failed: bool = False) -> None:
        self.done += 1
        level = logging.ERROR if failed else logging.INFO
        if self.total < self.done:  # a worker process sees its cases one at a time
            self.logger.log(level, "[%d] %s", self.done, message)
            return
        elapsed = time.monotonic() - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        self.logger.log(level, "[%d/%d] %s (ETA %.0f s)", self.done, self.total, message, eta)

    def warn(self, message: str) -> None:
        self.logger.warning(message)

    def finish(self) -> None:
        if self.started:
            self.logger.info("done in %.1f s", time.monotonic() - self.t0)


def escape(text: str) -> str:
    """``text`` with rich markup characters escaped (messages may contain brackets)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


class RichReporter:
    """A rich progress bar over every case x method, with an ETA; warnings print above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.cases_task = self.progress.add_task("cases", total=None)
        self.task = self.progress.add_task("starting", total=None)

    def start(self, total: int, cases: int = 0) -> None:
        self.progress.update(self.cases_task, total=cases)
        self.progress.update(self.task, total=total)
        self.progress.start()

    def case_done(self, message: str) -> None:
        self.progress.console.print(message, highlight=False)
        self.progress.advance(self.cases_task)

    def step(self, description: str) -> None:
        self.progress.update(self.task, description=description)

    def advance(self, message: str, failed: bool = False) -> None:
        self.progress.console.print(
            f"[red]{escape(message)}[/]" if failed else escape(message), highlight=False
        )
        self.progress.advance(self.task)

    def warn(self, message: str) -> None:
        self.progress.console.print(f"[yellow]warning:[/] {message}", highlight=False)

    def finish(self) -> None:
        self.progress.stop()
