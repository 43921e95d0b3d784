"""Which cases one process of a job array takes: every N-th case starting at I."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import TypeVar

from xaimed.errors import XaimedError

log = logging.getLogger("xaimed")

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based); ``count == 1`` is the whole run."""

    index: int = 0
    count: int = 1

    @property
    def suffix(self) -> str:
        """File-name part that keeps the files of different shards apart ('' when unsharded)."""
        return "" if self.count == 1 else f"-shard-{self.index}-of-{self.count}"

    def select(self, items: list[T]) -> list[T]:
        """Every ``count``-th item starting at ``index``, in the given order."""
        return items[self.index :: self.count]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``I/N`` with 0 <= I < N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise XaimedError(
            f"--shard {text!r}: expected I/N with 0 <= I < N (I counts from 0), e.g. --shard 0/4."
        )
    return Shard(int(match[1]), int(match[2]))


def shard_from_environment(environ: dict[str, str] | None = None) -> Shard | None:
    """The shard of a Slurm job-array task, or None outside a job array.

    Slurm numbers array tasks from whatever ``--array`` said (``0-9`` or ``1-10``), so the index
    is the task id minus ``SLURM_ARRAY_TASK_MIN``; ``SLURM_ARRAY_TASK_COUNT`` is the count.
    """
    env = os.environ if environ is None else environ
    task, count = env.get("SLURM_ARRAY_TASK_ID"), env.get("SLURM_ARRAY_TASK_COUNT")
    if task is None or count is None:
        return None
    try:
        index = int(task) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        shard = Shard(index, int(count))
    except ValueError:
        raise XaimedError(
            f"SLURM_ARRAY_TASK_ID={task!r} / SLURM_ARRAY_TASK_COUNT={count!r} are not numbers; "
            "give --shard I/N explicitly."
        ) from None
    if not 0 <= shard.index < shard.count:
        raise XaimedError(
            f"Slurm array task {task} is outside 0..{shard.count - 1} after subtracting "
            "SLURM_ARRAY_TASK_MIN; use a contiguous --array range or give --shard I/N."
        )
    return shard


def resolve_shard(option: str | None, environ: dict[str, str] | None = None) -> Shard:
    """``--shard`` when given, else the Slurm array task's shard (logged), else the whole run."""
    if option is not None:
        return parse_shard(option)
    shard = shard_from_environment(environ)
    if shard is None:
        return Shard()
    log.info(
        "Slurm job array detected: running shard %s (SLURM_ARRAY_TASK_ID minus "
        "SLURM_ARRAY_TASK_MIN / SLURM_ARRAY_TASK_COUNT); --shard overrides this",
        shard,
    )
    return shard
