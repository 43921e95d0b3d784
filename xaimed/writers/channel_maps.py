"""Per-channel maps of a multi-channel source: ``<case>_<method>_<channel>.nii.gz``.

A multi-sequence case (T1, T1ce, T2, FLAIR) or a 4D file with channels gets, besides the
combined map, one NIfTI per source channel: that channel's raw part of the map, before the
channels are added up and before post-processing. The parts add up to the raw combined map
exactly (float32, added in channel order). The sidecar and the manifest record each channel's
share of the total absolute attribution (see the case worker).
"""

from __future__ import annotations

from xaimed.writers.base import MapOutput
from xaimed.writers.nifti import write_nifti_map


def channel_map_name(stem: str, channel: str, *, compress: bool) -> str:
    """The file name of ``channel``'s map next to the combined map ``stem``."""
    return f"{stem}_{channel}{'.nii.gz' if compress else '.nii'}"


class ChannelMapsWriter:
    """One float32 NIfTI per source channel (``outputs.nifti``, multi-channel sources only).

    It fills no manifest column of its own: the files are named after the combined map and
    listed, with each channel's share, in the sidecar's ``channels`` record.
    """

    name = "channel_maps"
    columns: tuple[str, ...] = ()

    def wanted(self, out: MapOutput) -> bool:
        """When ``outputs.nifti`` is on and the source has several channels."""
        return out.outputs.nifti and bool(out.channel_maps)

    def write(self, out: MapOutput) -> dict[str, str]:
        """``<stem>_<channel>.nii(.gz)`` for each channel."""
        for channel, volume in out.channel_maps.items():
            name = channel_map_name(out.stem, channel, compress=out.outputs.compress)
            write_nifti_map(volume, out.case_dir / name, method=f"{out.method} {channel}")
        return {}
