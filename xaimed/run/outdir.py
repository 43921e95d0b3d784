"""Refuse an output folder that cannot be written before a run writes anything.

A run that cannot write its folder (the path is a file, a read-only file system, no permission,
a full disk) can run nothing: that is exit status 2 with one sentence, found before logging,
discovery or the model, and without creating anything, so a refused run leaves no folder behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from xaimed.errors import OutputError

# Less than this is a full disk for a run: one map and its sidecar of a small volume need more.
MIN_FREE_BYTES = 1 << 20


def check_out_dir(out_dir: Path) -> None:
    """Raise OutputError naming ``--out`` when the folder cannot be made or written to."""
    path = out_dir.expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {out_dir}: is a file, not a folder; give a folder path.")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(
            f"--out {out_dir}: {existing} is a file, so no folder can be made under it; give a "
            "folder path."
        )
    # access() also reports a read-only file system (EROFS), for root too.
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(
            f"--out {out_dir}: {existing} is not writable (read-only or no permission); choose "
            "a folder you can write to."
        )
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return
    if free < MIN_FREE_BYTES:
        raise OutputError(
            f"--out {out_dir}: the disk holding {existing} is full ({free} bytes free); free "
            "some space or choose another folder."
        )
