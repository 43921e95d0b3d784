"""Evaluate's CPU threads: the idle cores unless runtime.threads says, torch's setting restored."""

from __future__ import annotations

import os

import torch

from xaimed.evaluate.threads import cpu_threads, idle_cores


def test_idle_cores_are_between_one_and_the_usable_cores():
    idle = idle_cores()
    assert idle is not None  # Linux has a load average
    assert 1 <= idle <= len(os.sched_getaffinity(0))


def test_a_process_confined_to_some_cores_takes_all_of_them():
    # A scheduler's allocation (8 of 64 cores): the machine's load runs on the other cores.
    assert idle_cores(usable=8, machine=64) is None
    # The whole machine: the load competes for these very cores.
    before = os.getloadavg()[0]
    whole = idle_cores(usable=64, machine=64)
    after = os.getloadavg()[0]  # the load average may be refreshed between the readings
    assert whole in {max(1, round(64 - before)), max(1, round(64 - after))}


def test_threads_follow_the_setting_and_are_restored():
    before = torch.get_num_threads()
    with cpu_threads(3) as threads:
        assert threads == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    with cpu_threads(None, adapt=False) as threads:
        assert threads == before == torch.get_num_threads()
    with cpu_threads(None) as threads:
        assert torch.get_num_threads() == threads
        # idle_cores may change between two readings of the load average by one core.
        assert 1 <= threads <= before
    assert torch.get_num_threads() == before


def test_blas_runs_on_one_thread_inside_and_as_before_after():
    from threadpoolctl import threadpool_info

    def blas() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas()
    with cpu_threads(None):
        assert blas() and all(n == 1 for n in blas())
    assert blas() == before
