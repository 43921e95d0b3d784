"""Combine the manifests of a sharded run into one ``manifest.csv`` and summarise the run."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from xaimed.errors import InputError
from xaimed.report.hook import refresh_report
from xaimed.writers.manifest import ManifestRow, read_manifest, write_manifest

_SHARD = re.compile(r"manifest-shard-(\d+)-of-(\d+)\.csv")


@dataclass
class MergeSummary:
    """What the merged run did, per case and overall."""

    manifest: Path
    shards: list[Path]
    rows: list[ManifestRow]
    cases: dict[str, str] = field(default_factory=dict)  # case id -> ok/failed/...
    case_seconds: dict[str, float] = field(default_factory=dict)
    missing_shards: list[int] = field(default_factory=list)

    def count(self, state: str) -> int:
        """Cases in ``state``."""
        return sum(1 for s in self.cases.values() if s == state)

    @property
    def total_seconds(self) -> float:
        """Compute time of all the maps (summed over cases, so over shards too)."""
        return sum(self.case_seconds.values())

    def slowest(self, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` cases that took longest."""
        return sorted(self.case_seconds.items(), key=lambda kv: -kv[1])[:n]


def _case_state(rows: list[ManifestRow]) -> str:
    statuses = {r["status"] for r in rows}
    for state in ("failed", "interrupted", "pending", "not_run"):
        if state in statuses:
            return state
    if all(r.get("resumed") == "yes" for r in rows):
        return "skipped"
    return "ok"


def merge_manifests(run_dir: Path) -> MergeSummary:
    """Write ``run_dir/manifest.csv`` from its shard manifests, in the unsharded case order.

    Every row carries its case's place in the unsharded order (``case_index``), so the order
    is right even when a shard was killed part-way. A shard whose manifest is missing is
    reported; a killed shard's unfinished cases are ``pending``.
    """
    shards = sorted(
        (p for p in run_dir.glob("manifest-shard-*-of-*.csv") if _SHARD.fullmatch(p.name)),
        key=lambda p: int(_SHARD.fullmatch(p.name)[1]),  # type: ignore[index]
    )
    if not shards:
        raise InputError(
            f"{run_dir}: no shard manifests (manifest-shard-I-of-N.csv); give the --out folder "
            "of a sharded `xaimed explain` run."
        )
    counts = {int(_SHARD.fullmatch(p.name)[2]) for p in shards}  # type: ignore[index]
    if len(counts) != 1:
        raise InputError(
            f"{run_dir}: shard manifests of different shard counts {sorted(counts)}; remove the "
            "manifests of the older run."
        )
    count = counts.pop()
    present = {int(_SHARD.fullmatch(p.name)[1]): p for p in shards}  # type: ignore[index]
    by_case: dict[str, list[ManifestRow]] = {}
    for index in sorted(present):
        for row in read_manifest(present[index]):
            by_case.setdefault(row["case_id"], []).append(row)
    rows: list[ManifestRow] = []
    summary = MergeSummary(run_dir / "manifest.csv", shards, rows)
    summary.missing_shards = [i for i in range(count) if i not in present]

    def position(case_rows: list[ManifestRow]) -> int:
        index = case_rows[0].get("case_index")
        return index if index is not None else 1 << 62

    for case_rows in sorted(by_case.values(), key=position):
        rows += case_rows
        case_id = case_rows[0]["case_id"]
        summary.cases[case_id] = _case_state(case_rows)
        # Resumed rows count too: they carry the time the earlier run spent on them.
        summary.case_seconds[case_id] = sum(r.get("wall_s") or 0.0 for r in case_rows)
    write_manifest(rows, summary.manifest)
    refresh_report(summary.manifest)
    return summary
