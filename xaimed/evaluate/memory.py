"""Keep freed memory in the process for evaluate's many same-sized model passes (Linux, glibc).

Every curve batch and re-explanation allocates the same large activation and gradient tensors
again. PyTorch's CPU allocator hands them to ``malloc``, and glibc serves blocks this large
with ``mmap`` and gives them back with ``munmap`` when freed, so each pass has the kernel
zero fresh pages again: on the sample a quarter of evaluate's time was system time in those
page faults. Telling glibc to serve large blocks from its heap and not to trim it
(``mallopt``; the same settings as the ``MALLOC_MMAP_MAX_`` and ``MALLOC_TRIM_THRESHOLD_``
environment variables, which only act at process start) reuses the pages instead: measured
34 s -> 21 s wall, 11.6 s -> 1.0 s system time for one sample case (``benchmarks/evaluate.py``).
Values are unchanged (only where memory comes from). The process keeps its peak memory until
it ends instead of returning it between passes (about +10 % maximum resident size there).

No Python library exposes ``mallopt``, hence ctypes. Elsewhere (macOS, Windows, musl) this
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger("xaimed")

# glibc's malloc.h parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int; 2 GiB of free heap top before trimming


def keep_freed_memory() -> bool:
    """Have glibc reuse freed large blocks instead of unmapping them; True when applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        applied = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)
        )
    except (OSError, AttributeError):
        return False
    if not applied:
        log.debug("mallopt refused the settings; evaluate runs with the default allocator")
    return applied
