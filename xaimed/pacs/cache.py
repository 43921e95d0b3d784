"""Retrieved studies on disk: one folder per study, complete or absent, within a size limit.

A study is retrieved into a temporary folder and renamed into place when every series has
arrived, so a killed run never leaves a half study that a retry would take as complete, and a
retry (or a second method, shard or run) finds it without fetching twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("xaimed")

COMPLETE = ".complete"


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class StudyCache:
    """Study folders under ``root``; finished studies beyond ``max_bytes`` are removed oldest
    first, and a study is removed when its case is done unless ``keep``."""

    def __init__(self, root: Path, max_bytes: int, keep: bool) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.keep = keep

    def folder(self, study_uid: str) -> Path:
        """Where a study lives: a hash of its UID (no identifiers in file names)."""
        return self.root / hashlib.sha256(study_uid.encode()).hexdigest()[:16]

    def get(self, study_uid: str, fetch: Callable[[Path], None]) -> tuple[Path, bool]:
        """The study's folder, calling ``fetch(folder)`` to fill a temporary one if needed;
        and whether it was fetched now (False: found in the cache)."""
        final = self.folder(study_uid)
        if (final / COMPLETE).is_file():
            return final, False
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / f".partial-{socket.gethostname()}-{os.getpid()}-{final.name}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            fetch(partial)
            partial.mkdir(parents=True, exist_ok=True)
            (partial / COMPLETE).write_text("")
            shutil.rmtree(final, ignore_errors=True)  # a half study left by an older layout
            try:
                partial.rename(final)
            except OSError:
                # Another process finished the same study first: keep its copy.
                if not (final / COMPLETE).is_file():
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        self.trim(keep=final)
        return final, True

    def release(self, study_uid: str) -> None:
        """A case is done with its study: remove it unless the cache keeps studies."""
        if not self.keep:
            shutil.rmtree(self.folder(study_uid), ignore_errors=True)

    def trim(self, keep: Path | None = None) -> None:
        """Remove the oldest finished studies until the cache fits ``max_bytes``."""
        studies = [p for p in self.root.iterdir() if (p / COMPLETE).is_file() and p != keep]
        sizes = {p: _size(p) for p in studies}
        total = sum(sizes.values()) + (_size(keep) if keep is not None else 0)
        for study in sorted(studies, key=lambda p: (p / COMPLETE).stat().st_mtime_ns):
            if total <= self.max_bytes:
                break
            shutil.rmtree(study, ignore_errors=True)
            total -= sizes[study]
            log.info("cache over its size limit: removed study %s", study.name)
