"""evaluate keeps freed memory in the process (glibc's mallopt) where the C library allows it."""

from __future__ import annotations

import platform

import pytest
import torch

from xaimed.evaluate.memory import keep_freed_memory


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's; elsewhere keep_freed_memory does nothing",
)
def test_glibc_takes_the_settings_and_tensors_compute_as_before():
    x = torch.arange(4_000_000, dtype=torch.float32)  # 16 MB: above glibc's mmap threshold
    expected = float((x * 2).sum())
    assert keep_freed_memory() is True
    assert float((x * 2).sum()) == expected
