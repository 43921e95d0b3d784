"""One run at a time per output folder and shard: a lock file held for the whole run.

The lock is an advisory ``flock`` on ``.lock`` (``.lock-shard-I-of-N`` for a shard) in the output
folder. The operating system drops it when the process ends, however it ends, so the lock of a
killed run is taken over by the next run without anyone deleting files; the file itself only
says who holds it, for the message a second run prints. Shards of one run hold different locks
and share the folder, as they are meant to.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from xaimed.errors import XaimedError

log = logging.getLogger("xaimed")


def lock_path(out_dir: Path, suffix: str) -> Path:
    """The lock file of the shard with manifest suffix ``suffix`` (``""`` when unsharded)."""
    return out_dir / f".lock{suffix}"


@contextmanager
def run_lock(out_dir: Path, suffix: str = "") -> Iterator[Path]:
    """Hold the lock of ``out_dir`` (and shard ``suffix``) while the block runs.

    Raises XaimedError naming the process that holds it when another run has it.
    """
    path = lock_path(out_dir, suffix)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise XaimedError(
            f"--out {out_dir}: cannot create the run's lock file {path.name} ({exc.strerror}); "
            "check that the folder is writable."
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _describe(_read_holder(fd))
            raise XaimedError(
                f"--out {out_dir}: another xaimed run is writing into this folder ({holder}); "
                "wait for it to finish, or give this run another --out folder."
            ) from None
        previous = _read_holder(fd)
        if previous:
            # The previous holder's lock was released: it finished or was killed.
            log.debug("taking over the lock of %s (no longer running)", _describe(previous))
        _write_holder(fd)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _read_holder(fd: int) -> dict[str, object]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        body = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _write_holder(fd: int) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))


def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "process unknown"
    return f"process {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
