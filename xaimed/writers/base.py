"""What an output writer is: the :class:`Writer` protocol and the :class:`MapOutput` it writes.

Writers are registered once, in order, in :data:`xaimed.writers.outputs.WRITERS`; the case worker
offers every map to each of them. A writer declares the manifest columns it fills (each one a
:class:`xaimed.writers.manifest.ManifestRow` key), so that completion records can check its
files on resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from xaimed.config import OutputsSection
from xaimed.volume import Volume


@dataclass(frozen=True)
class MapOutput:
    """One map of one case, method and target, with everything its writers need.

    ``stem`` is the file-name stem under ``case_dir``; ``title`` the one-line caption of
    pictures; ``derivation`` what besides method, target and model shaped the map (it enters
    DICOM UIDs); ``sidecar`` the finished sidecar record; ``channel_maps`` each source
    channel's raw part of the map, by channel name (multi-channel sources only).
    """

    source: Volume
    heatmap: Volume
    case_dir: Path
    stem: str
    method: str
    target: str
    title: str
    outputs: OutputsSection
    derivation: dict[str, Any]
    model_sha256: str
    sidecar: dict[str, Any]
    channel_maps: dict[str, Volume] = field(default_factory=dict)


class Writer(Protocol):
    """An output format for maps."""

    name: str
    # The manifest columns this writer fills, each with the path of what it wrote.
    columns: tuple[str, ...]

    def wanted(self, out: MapOutput) -> bool:
        """Whether the config (``out.outputs``) and the source ask for this output."""
        ...

    def write(self, out: MapOutput) -> dict[str, str]:
        """Write the output; returns its manifest columns (a subset of ``columns``)."""
        ...
