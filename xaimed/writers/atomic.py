"""Write files under a temporary name and rename them when complete."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_name(name: str) -> str:
    """``.tmp-<host>-<pid>-<name>``: unique per process even on a file system shared by nodes."""
    host = re.sub(r"[^A-Za-z0-9]+", "", socket.gethostname())[:32] or "host"
    return f".tmp-{host}-{os.getpid()}-{name}"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.png``) because several libraries
    choose the format from them. A crash never leaves a partial file under the final name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temporary_name(path.name))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
