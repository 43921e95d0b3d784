"""How a cohort run is carried out (as opposed to what it computes, which is the config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from xaimed.run.logs import LogSetup
from xaimed.run.shard import Shard
from xaimed.run.signals import StopFlag

Executor = Literal["local", "dask"]


@dataclass
class RunOptions:
    """Options of ``xaimed explain`` that shape the run, not its results.

    - ``shard``: which cases this process takes (every N-th from I);
    - ``overwrite``: redo work even when a matching completion record exists;
    - ``fail_fast``: stop at the first case that fails (the rest is recorded as not run);
    - ``dry_run``: only list what would be run and what skipped;
    - ``executor``/``scheduler``: ``local`` (this process, or one process per device in
      ``devices``) or ``dask`` on the distributed scheduler at ``scheduler``;
    - ``devices``: one worker process per device (``["cuda:0", "cuda:1"]``); None: all visible
      GPUs when runtime.device asks for CUDA and there are several, else this process;
    - ``prefetch``: read and preprocess the next case while the current one is explained;
    - ``stop``: the flag SIGTERM/SIGINT set (made by the run when None);
    - ``logs``: how worker processes log (the CLI passes its own set-up, log file included).
    """

    shard: Shard = field(default_factory=Shard)
    overwrite: bool = False
    fail_fast: bool = False
    dry_run: bool = False
    executor: Executor = "local"
    scheduler: str | None = None
    devices: list[str] | None = None
    prefetch: bool = True
    stop: StopFlag | None = None
    logs: LogSetup | None = None


def interrupted_fields(cause: str) -> dict[str, Any]:
    """Manifest fields of work a stop request left undone."""
    return {
        "status": "interrupted",
        "error_type": "Interrupted",
        "error": f"run stopped ({cause}) before this was done; run the same command again to "
        "resume",
    }
