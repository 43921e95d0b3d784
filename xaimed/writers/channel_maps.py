"""Per-channel maps of a multi-channel source: ``<case>_<method>_<channel>.nii.gz`` (or the
suffix of ``outputs.format``).

A multi-sequence case (T1, T1ce, T2, FLAIR) or a 4D file with channels gets, besides the
combined map, one map volume per source channel: that channel's raw part of the map, before the
channels are added up and before post-processing. The parts add up to the raw combined map
exactly (float32, added in channel order). The sidecar and the manifest record each channel's
share of the total absolute attribution (see the case worker).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xaimed.config import OutputsSection
from xaimed.volume import Volume
from xaimed.writers.base import MapOutput
from xaimed.writers.volume import map_format, map_suffix, write_map_volume


def channel_map_name(stem: str, channel: str, outputs: OutputsSection, source: Volume) -> str:
    """The file name of ``channel``'s map next to the combined map ``stem`` of ``source``."""
    return f"{stem}_{channel}{map_suffix(map_format(outputs, source), outputs.compress)}"


def channel_map_files(sidecar: Mapping[str, Any], folder: Path) -> dict[str, Path]:
    """The per-channel map files a map's sidecar lists (its ``channels.maps`` record), by
    channel, in ``folder`` (the sidecar's own folder: the maps are written beside it); {} for a
    single-channel source or a run without ``outputs.nifti``.

    Resume (completion records) and the report find the files this way: they have no manifest
    column, as their number depends on the source."""
    channels = sidecar.get("channels")
    maps = channels.get("maps") if isinstance(channels, Mapping) else None
    if not isinstance(maps, Mapping):
        return {}
    # Plain file names only: an edited sidecar cannot point resume or the report elsewhere.
    return {
        str(name): folder / file
        for name, file in maps.items()
        if isinstance(file, str) and file not in ("", ".", "..") and Path(file).name == file
    }


class ChannelMapsWriter:
    """One float32 map volume (``outputs.format``) per source channel (``outputs.nifti``,
    multi-channel sources only).

    It fills no manifest column of its own: the files are named after the combined map and
    listed, with each channel's share, in the sidecar's ``channels`` record.
    """

    name = "channel_maps"
    columns: tuple[str, ...] = ()

    def wanted(self, out: MapOutput) -> bool:
        """When ``outputs.nifti`` is on and the source has several channels."""
        return out.outputs.nifti and bool(out.channel_maps)

    def write(self, out: MapOutput) -> dict[str, str]:
        """``<stem>_<channel>`` for each channel."""
        for channel, volume in out.channel_maps.items():
            write_map_volume(
                volume, out.case_dir, f"{out.stem}_{channel}", out.outputs,
                method=f"{out.method} {channel}",
            )  # fmt: skip
        return {}
