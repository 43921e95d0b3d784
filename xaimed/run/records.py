"""Completion records: what makes a case and method count as done, for resuming a run.

A record is written after every output of one case and method (all its targets, the dominant
map, DICOM series) has been renamed to its final name, so its presence means the work is
complete. It stores the work key and the manifest rows of that work. A later run skips the work
only when the record's key equals the key it would write itself and every file the record lists
(the manifest row's outputs, and the per-channel maps of a multi-channel source, which the map's
sidecar lists) is still there with the size it had; anything else (a changed config, model or
xaimed version, a deleted map) redoes it. Output paths are stored relative to the run folder,
with each file's SHA-256 (``xaimed evaluate`` checks maps by it), so a copied or moved run
folder keeps working.

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
from xaimed.errors import InputError
from xaimed.io.case import Case
from xaimed.writers.atomic import atomic_path
from xaimed.writers.channel_maps import channel_map_files
from xaimed.writers.manifest import ManifestRow, relative_paths, resolved_paths
from xaimed.writers.naming import file_part
from xaimed.writers.outputs import FILE_COLUMNS

RECORD_DIR = ".done"


def case_identity(case: Case) -> dict[str, Any]:
    """What makes a case the same case on a rerun: its id, its source (path, and size and
    modification time for a file; a study on a DICOM server: the server and its UID), its mask
    and its label (a case list may change any of them).

    The id is part of it so that a record can never be taken for another case's, even if two
    cases were ever to share a folder."""
    identity: dict[str, Any] = {
        "case_id": case.case_id, "path": case.source, "mask": None, "label": case.label,
    }  # fmt: skip
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
    for channel in case.channels:  # a multi-sequence case: every channel's file counts
        try:
            info = channel.path.stat()
        except OSError:
            continue
        identity.setdefault("channels", {})[channel.name] = [
            str(channel.path), info.st_size, info.st_mtime_ns,
        ]  # fmt: skip
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


def _size(path: Path) -> int:
    """A file's size; for a folder (a DICOM series), the total size of its files."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size


def file_sha256(path: Path) -> str:
    """SHA-256 of a file; for a folder (a DICOM series), of its files' names and contents."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.name.encode("utf-8", "surrogateescape") + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def write_record(path: Path, key: str, rows: list[ManifestRow], run_dir: Path) -> None:
    """Record the finished work (after every output file is in place).

    Output paths are stored relative to ``run_dir``, with each file's size (checked on resume)
    and SHA-256 (checked by ``xaimed evaluate``), so the run folder can be copied or moved."""
    relative = [relative_paths(row, run_dir) for row in rows]
    sizes: dict[str, int] = {}
    hashes: dict[str, str] = {}
    for row, rel in zip(rows, relative, strict=True):
        for column in FILE_COLUMNS:
            if row.get(column) and Path(row[column]).exists():  # type: ignore[literal-required]
                name = str(rel[column])
                sizes[name] = _size(Path(row[column]))  # type: ignore[literal-required]
                hashes[name] = file_sha256(Path(row[column]))  # type: ignore[literal-required]
        for file in _channel_maps(row):
            name = _relative_name(file, run_dir)
            sizes[name] = _size(file)
            hashes[name] = file_sha256(file)
    body = {"key": key, "xaimed": __version__, "rows": relative, "sizes": sizes, "sha256": hashes}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(body, indent=1, default=str) + "\n", encoding="utf-8")


def _channel_maps(row: ManifestRow) -> list[Path]:
    """The per-channel maps the row's sidecar lists (they have no manifest column)."""
    text = row.get("sidecar")
    body = _read_body(Path(text)) if text else None
    if body is None:
        return []
    listed = channel_map_files(body, Path(str(text)).parent).values()
    return [file for file in listed if file.exists()]


def _relative_name(file: Path, run_dir: Path) -> str:
    """``file`` as a record names it: relative to the run folder when inside it."""
    try:
        return file.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(file)


def _read_body(path: Path) -> dict[str, Any] | None:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def read_record(path: Path, key: str, run_dir: Path) -> Record | None:
    """The record at ``path`` when it matches ``key`` and its outputs (relative paths resolved
    against ``run_dir``) are intact, else None."""
    body = _read_body(path)
    if body is None or body.get("key") != key:
        return None
    sizes: dict[str, int] = body.get("sizes", {})
    rows = []
    checked: set[str] = set()
    for stored in body.get("rows", []):
        row = ManifestRow(**resolved_paths(stored, run_dir))  # type: ignore[typeddict-item]
        for column in FILE_COLUMNS:
            name = stored.get(column)
            if not name:
                continue
            output = Path(row[column])  # type: ignore[literal-required]
            if not output.exists() or sizes.get(name) != _size(output):
                return None
            checked.add(name)
        rows.append(row)
    # Every other file the record lists (per-channel maps) must be there with its size too.
    for name, size in sizes.items():
        if name in checked:
            continue
        output = run_dir.absolute() / name
        if not output.exists() or _size(output) != size:
            return None
    return Record(key, rows)


def check_outputs(run_dir: Path, row: dict[str, str]) -> None:
    """Raise InputError when a file of the manifest ``row`` (paths resolved against ``run_dir``)
    is missing or differs from the SHA-256 its completion record holds.

    A row without a record, or a record written before hashes were kept, is not checked."""
    body = _read_body(record_path(run_dir, row["case_id"], row["method"]))
    hashes: dict[str, str] = (body or {}).get("sha256", {})
    if not hashes:
        return
    for column in FILE_COLUMNS:
        text = row.get(column)
        if not text:
            continue
        file = Path(text)
        try:
            name = file.resolve().relative_to(run_dir.resolve()).as_posix()
        except ValueError:
            name = text
        if name not in hashes:
            continue
        if not file.exists():
            raise InputError(
                f"case {row['case_id']} {row['method']}: {file} is missing; re-run "
                "`xaimed explain` on this run folder."
            )
        if file_sha256(file) != hashes[name]:
            raise InputError(
                f"case {row['case_id']} {row['method']}: {file} differs from what `xaimed "
                "explain` wrote (SHA-256 mismatch; truncated or changed); re-run `xaimed "
                "explain` on this run folder."
            )


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
