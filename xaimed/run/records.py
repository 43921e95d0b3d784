"""Completion records: what makes a case and method count as done, for resuming a run.

A record is written after every output of one case and method (all its targets, the dominant
map, DICOM series) has been renamed to its final name, so its presence means the work is
complete. It stores the work key and the manifest rows of that work. A later run skips the work
only when the record's key equals the key it would write itself and every file the record lists
is still there with the size it had; anything else (a changed config, model or xaimed version, a
deleted map) redoes it.

The key covers the case (its source path, size and modification time, its mask and label), the
whole validated config except the method list (only this method's entry counts, so adding a
method does not redo the others) and the settings that choose where the work runs rather than
what it computes (``runtime.device``, ``runtime.threads``): a job requeued onto another kind of
node resumes instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xaimed import __version__
from xaimed.config import Config, MethodEntry
from xaimed.io.case import Case
from xaimed.writers.atomic import atomic_path
from xaimed.writers.manifest import ManifestRow
from xaimed.writers.naming import file_part
from xaimed.writers.outputs import FILE_COLUMNS

RECORD_DIR = ".done"


def case_identity(case: Case) -> dict[str, Any]:
    """What makes a case the same case on a rerun: its source (path, and size and modification
    time for a file), its mask and its label (a case list may change any of them)."""
    identity: dict[str, Any] = {"path": case.source, "mask": None, "label": case.label}
    # A study on a DICOM server is known by its UID (and server); its cache folder says nothing.
    source = None if case.format == "pacs" else case.path
    for key, path in (("source", source), ("mask", case.mask)):
        if path is None:
            continue
        try:
            info = path.stat()
        except OSError:
            continue
        # A DICOM study is a folder: its files are not summed here (that would read every
        # header of a large cohort on each resume); the study id in the case id covers it.
        is_file = stat.S_ISREG(info.st_mode)
        identity[key] = [str(path), info.st_size, info.st_mtime_ns] if is_file else str(path)
    return identity


class WorkKeys:
    """Completion-record keys: SHA-256 of a method's settings (config, model, version; made once
    per method) and of the case's identity."""

    def __init__(self, config: Config, model_sha256: str) -> None:
        settings = config.model_dump(mode="json", by_alias=True)
        settings.pop("methods", None)
        # Where studies come from and how they are cached does not change the maps.
        settings.pop("pacs", None)
        if settings.get("outputs", {}).get("store") is None:
            settings.get("outputs", {}).pop("store", None)
        for where in ("device", "threads"):
            settings.get("runtime", {}).pop(where, None)
        self._common = {"config": settings, "model_sha256": model_sha256, "xaimed": __version__}
        self._methods: dict[str, str] = {}

    def _method(self, entry: MethodEntry) -> str:
        key = self._methods.get(entry.output_id)
        if key is None:
            blob = self._common | {"method": entry.model_dump(mode="json", by_alias=True)}
            key = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()
            self._methods[entry.output_id] = key
        return key

    def key(self, entry: MethodEntry, identity: dict[str, Any]) -> str:
        """The key of ``entry``'s work on the case whose :func:`case_identity` is ``identity``."""
        blob = {"method": self._method(entry), "case": identity}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def record_path(out_dir: Path, case_id: str, output_id: str) -> Path:
    """Where the record of ``output_id`` on ``case_id`` lives."""
    return out_dir / case_id / RECORD_DIR / f"{file_part(output_id)}.json"


@dataclass(frozen=True)
class Record:
    """A finished case and method: its key and its manifest rows."""

    key: str
    rows: list[ManifestRow]


def _outputs(row: ManifestRow) -> list[Path]:
    paths = []
    for column in FILE_COLUMNS:
        value = row.get(column)
        if value:
            paths.append(Path(value))
    return paths


def _size(path: Path) -> int:
    """A file's size; for a folder (a DICOM series), the total size of its files."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size


def write_record(path: Path, key: str, rows: list[ManifestRow]) -> None:
    """Record the finished work (after every output file is in place)."""
    sizes = {str(p): _size(p) for row in rows for p in _outputs(row) if p.exists()}
    body = {"key": key, "xaimed": __version__, "rows": rows, "sizes": sizes}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(body, indent=1, default=str) + "\n", encoding="utf-8")


def read_record(path: Path, key: str) -> Record | None:
    """The record at ``path`` when it matches ``key`` and its outputs are intact, else None."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("key") != key:
        return None
    sizes: dict[str, int] = body.get("sizes", {})
    for row in body.get("rows", []):
        for output in _outputs(row):
            if not output.exists() or sizes.get(str(output)) != _size(output):
                return None
    return Record(key, list(body.get("rows", [])))


def clear_stale_temporaries(case_dir: Path) -> int:
    """Remove temporaries a killed process left in one case's folder; returns how many.

    Only the process that owns a case writes into its folder (shards split by case), so any
    ``.tmp-*`` file found there before the case starts is left over from a killed run.
    """
    removed = 0
    if not case_dir.is_dir():
        return 0
    for tmp in sorted(case_dir.rglob(".tmp-*"), reverse=True):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed += 1
    return removed
