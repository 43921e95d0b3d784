"""What the report shows, read from a run folder's files (never from the pipeline's objects).

The report depends only on what ``xaimed explain`` and ``xaimed evaluate`` write: the manifest,
the sidecars, the maps and the evaluation's ``metrics.csv`` / ``evaluation.json``. So it can
be written for any run folder, by any version that wrote those files, long after the run.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from xaimed.errors import InputError
from xaimed.writers.channel_maps import channel_map_files
from xaimed.writers.manifest import read_manifest

# Manifest columns that can identify a patient or a study (paths often carry names or MRNs;
# Series Instance UIDs can be looked up in a PACS): left out unless report.identifiers is true.
IDENTIFYING_COLUMNS = ("source", "series_uid")


@dataclass
class MapEntry:
    """One manifest row: a case, a method and a target, with its outcome."""

    case_id: str
    method: str
    target: str
    status: str
    row: dict[str, str]

    def path(self, column: str) -> Path | None:
        """The file the row names in ``column`` (nifti, sidecar, png), when it exists."""
        text = self.row.get(column) or ""
        path = Path(text) if text else None
        return path if path is not None and path.is_file() else None


@dataclass
class RunData:
    """The run as the report sees it."""

    run_dir: Path
    entries: list[MapEntry]
    config: dict[str, Any]
    sidecars: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    metrics: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    metric_names: list[str] = field(default_factory=list)
    curves: dict[tuple[str, str, str], dict[str, dict[str, list[float]]]] = field(
        default_factory=dict
    )
    evaluation: dict[str, Any] | None = None
    evaluation_dir: Path = Path()
    # One sentence per file the report could not use (the rest of the report is written).
    notes: list[str] = field(default_factory=list)

    @property
    def case_ids(self) -> list[str]:
        """Case ids in manifest order."""
        return list(dict.fromkeys(e.case_id for e in self.entries))

    @cached_property
    def multi_target(self) -> bool:
        """Whether some case has maps of one method for several targets (target.class: all)."""
        seen = set()
        for e in self.entries:
            if (e.case_id, e.method) in seen:
                return True
            seen.add((e.case_id, e.method))
        return False

    @property
    def methods(self) -> list[str]:
        """Method ids in manifest order."""
        return list(dict.fromkeys(e.method for e in self.entries))

    def shown_path(self, path: Path | None) -> str:
        """``path`` relative to the run folder when inside it (as the report names run files)."""
        if path is None:
            return ""
        try:
            return str(path.resolve().relative_to(self.run_dir.resolve()))
        except ValueError:
            return str(path)

    def sidecar(self, entry: MapEntry) -> dict[str, Any]:
        """The entry's sidecar (read once; empty when the map has none or it is unreadable,
        with a note)."""
        key = (entry.case_id, entry.method, entry.target)
        if key not in self.sidecars:
            path = entry.path("sidecar")
            try:
                self.sidecars[key] = _read_json(path) if path is not None else {}
            except InputError:
                self.notes.append(
                    f"case {entry.case_id}: sidecar {self.shown_path(path)} is not readable "
                    "JSON; its provenance and prediction are not shown (run the case again with "
                    "--overwrite to rewrite it)."
                )
                self.sidecars[key] = {}
        return self.sidecars[key]

    def channel_maps(self, entry: MapEntry) -> dict[str, Path]:
        """The per-channel map files of a map of a multi-channel source that exist, by channel,
        as its sidecar lists them ({} for other maps)."""
        sidecar_path = entry.path("sidecar")
        if entry.status != "ok" or sidecar_path is None:
            return {}
        listed = channel_map_files(self.sidecar(entry), sidecar_path.parent)
        return {name: path for name, path in listed.items() if path.is_file()}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc}).") from None
    return data if isinstance(data, dict) else {}


def read_run(run_dir: Path, evaluation_dir: Path | None = None) -> RunData:
    """Read ``run_dir``'s manifest and config, and the evaluation in ``evaluation_dir``
    (default: the run folder) when there is one."""
    manifest = run_dir / "manifest.csv"
    if not manifest.is_file():
        raise InputError(
            f"{run_dir}: no manifest.csv; give the --out folder of `xaimed explain` "
            "(for a sharded run, run `xaimed merge` first)."
        )
    rows = read_manifest(manifest)
    entries = [
        MapEntry(r.get("case_id", ""), r.get("method", ""), r.get("target", ""),
                 r.get("status", ""), r)
        for r in rows
    ]  # fmt: skip
    config_path = run_dir / "config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    data = RunData(run_dir, entries, config, evaluation_dir=evaluation_dir or run_dir)
    _read_evaluation(data, evaluation_dir or run_dir)
    return data


def _read_evaluation(data: RunData, folder: Path) -> None:
    metrics_csv = folder / "metrics.csv"
    if metrics_csv.is_file():
        names: dict[str, None] = {}
        with metrics_csv.open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                try:
                    value = float(r["value"])
                except (KeyError, ValueError):
                    continue
                # Per-step cascade rows carry a detail; the report shows the scalar metrics.
                if r.get("detail") and r["metric"].startswith("cascade_"):
                    continue
                if not math.isfinite(value):
                    continue
                key = (r["case_id"], r["method"], r.get("target", ""))
                data.metrics.setdefault(key, {})[r["metric"]] = value
                names[r["metric"]] = None
        data.metric_names = list(names)
    summary = folder / "evaluation.json"
    if summary.is_file():
        data.evaluation = _read_json(summary)
        for c in data.evaluation.get("curves", []):
            key = (c.get("case_id", ""), c.get("method", ""), c.get("target", ""))
            data.curves.setdefault(key, {})[c.get("kind", "")] = {
                "x": [round(float(v), 5) for v in c.get("fractions", [])],
                "y": [round(float(v), 5) for v in c.get("scores", [])],
            }
