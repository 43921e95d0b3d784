"""The registered output writers, in the order they run (the sidecar last: it lists the rest).

Adding an output is one module with a :class:`xaimed.writers.base.Writer` and one line here.
"""

from __future__ import annotations

from xaimed.writers.base import Writer
from xaimed.writers.dicom_outputs import ParametricMapWriter, SecondaryCaptureWriter
from xaimed.writers.png import PngWriter
from xaimed.writers.sidecar import SidecarWriter
from xaimed.writers.volume import MapVolumeWriter

WRITERS: tuple[Writer, ...] = (
    MapVolumeWriter(),
    PngWriter(),
    ParametricMapWriter(),
    SecondaryCaptureWriter(),
    SidecarWriter(),
)

# Manifest columns that hold output paths (checked for existence on resume).
FILE_COLUMNS: tuple[str, ...] = tuple(column for w in WRITERS for column in w.columns)
