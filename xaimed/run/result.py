"""What a run did: its manifest rows, shard and whether it was interrupted."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xaimed.run.shard import Shard
from xaimed.writers.manifest import ManifestRow


@dataclass
class RunResult:
    """What a run did: one manifest row per case, method and target.

    ``interrupted`` is True when SIGTERM/SIGINT stopped the run before all its work was done;
    ``plan`` is filled by a dry run (what would run and what would be skipped) instead of rows.
    """

    out_dir: Path
    rows: list[ManifestRow] = field(default_factory=list)
    shard: Shard = field(default_factory=Shard)
    interrupted: bool = False
    plan: list[dict[str, Any]] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        """Path of this shard's manifest CSV (``manifest.csv`` for an unsharded run)."""
        return self.out_dir / f"manifest{self.shard.suffix}.csv"

    @property
    def failed(self) -> list[ManifestRow]:
        """Rows whose work did not succeed (failed, interrupted, pending or not run)."""
        return [r for r in self.rows if r["status"] != "ok"]
