"""Per-case records of an evaluation, so that an interrupted ``xaimed evaluate`` resumes.

Each case has one JSON file under ``OUT/evaluation/records/``, holding per metric kind what the
kind produced (rows of metrics.csv, curves, cascades, failures), its wall time, and a key. The
key is a hash of what decides the result: the case's rows of the run manifest (without timing
columns), the ``evaluate`` settings, the model's SHA-256 and the seed. A rerun reuses a kind
whose key matches and redoes the others; ``--overwrite`` redoes everything. The file is replaced
atomically after each kind, so a stop at any moment leaves the finished kinds readable.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xaimed.evaluate.report import write_json
from xaimed.writers.manifest import TIMING_COLUMNS

RECORDS_DIR = Path("evaluation") / "records"


@dataclass
class KindRecord:
    """What one metric kind produced for one case."""

    key: str
    seconds: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    curves: list[dict[str, Any]] = field(default_factory=list)
    cascades: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def record_key(
    manifest_rows: list[dict[str, str]], settings: dict[str, Any], model_sha256: str, seed: int
) -> str:
    """SHA-256 of what decides a case's evaluation results."""
    rows = [
        {k: v for k, v in sorted(r.items()) if k not in TIMING_COLUMNS}
        for r in sorted(manifest_rows, key=lambda r: (r["method"], r["target"]))
    ]
    body = {"rows": rows, "settings": settings, "model": model_sha256, "seed": seed}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def record_path(out_dir: Path, case_id: str) -> Path:
    """``OUT/evaluation/records/<case_id>.json``."""
    return out_dir / RECORDS_DIR / f"{case_id}.json"


def load_records(path: Path, key: str) -> dict[str, KindRecord]:
    """The kinds recorded for a case under ``key``; a missing, unreadable or stale file gives
    none (the case is then evaluated again, which is always safe)."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        kinds = body["kinds"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    records = {}
    for kind, rec in kinds.items() if isinstance(kinds, dict) else ():
        if not isinstance(rec, dict) or rec.get("key") != key:
            continue
        # NaN (an undetermined verdict) is stored as null: strict JSON has no NaN.
        rows = [
            {**r, "value": math.nan if r.get("value") is None else float(r["value"])}
            for r in rec.get("rows", [])
        ]
        records[kind] = KindRecord(
            key, float(rec.get("seconds", 0.0)), rows,
            list(rec.get("curves", [])), list(rec.get("cascades", [])),
            [str(f) for f in rec.get("failures", [])],
        )  # fmt: skip
    return records


def save_records(path: Path, case_id: str, records: dict[str, KindRecord]) -> None:
    """Replace the case's record file atomically."""
    kinds = {
        kind: {"key": r.key, "seconds": r.seconds, "rows": r.rows, "curves": r.curves,
               "cascades": r.cascades, "failures": r.failures}
        for kind, r in records.items()
    }  # fmt: skip
    write_json({"case_id": case_id, "kinds": kinds}, path)
