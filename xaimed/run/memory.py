"""Peak memory of one piece of work (a method on a case), for the manifest.

Neither torch nor the standard library reports a per-interval peak of host memory: ``ru_maxrss``
is the process's lifetime peak. Linux resets the peak resident set (VmHWM) when 5 is written to
``/proc/self/clear_refs``, so the peak of each method can be read afterwards. Where that is not
possible (other systems, restricted containers) the lifetime peak is reported instead (the
README says so). On CUDA the allocator's own peak statistics are used.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass

import torch


@dataclass
class PeakMemory:
    """Peak host resident memory and peak CUDA memory allocated, in MiB."""

    host_mib: float | None = None
    device_mib: float | None = None


def _vm_hwm_kib() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMeter:
    """Measures the peak memory between ``start()`` and ``stop()``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._resettable = False

    def start(self) -> None:
        """Reset the peaks."""
        self._resettable = False
        if sys.platform.startswith("linux"):
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
                self._resettable = True
            except OSError:
                pass
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def stop(self) -> PeakMemory:
        """The peaks since ``start()``."""
        peak = PeakMemory()
        hwm = _vm_hwm_kib() if self._resettable else None
        if hwm is not None:
            peak.host_mib = round(hwm / 1024, 1)
        else:
            # ru_maxrss is in KiB on Linux and bytes on macOS.
            scale = 1 if sys.platform == "darwin" else 1024
            peak.host_mib = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
                                  / 2**20, 1)  # fmt: skip
        if self.device.type == "cuda":
            peak.device_mib = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        return peak
