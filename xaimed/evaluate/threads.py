"""How many CPU threads evaluate's model passes use when ``runtime.threads`` does not say.

PyTorch starts one thread per core and splits every operation across all of them; each split
waits until every thread has done its part. On a machine where other processes keep the cores
busy, a thread that is not running holds up the others at every one of evaluate's tens of
thousands of small operations (the scaled inputs of integrated gradients, ReLUs, pooling): on
the 2-core development machine under a load of 4-5, one sample case took 39.8 s wall and
28.7 s CPU with two threads and 28.7 s wall and 18.1 s CPU with one, the values unchanged
(each voxel's sums do not depend on how the work is split). On an idle machine every core
helps. So evaluate takes as many threads as cores are idle when it starts (usable cores minus
the 1-minute load average, rounded), at least one and at most torch's default;
``runtime.threads`` fixes the number instead.

The load average is the whole machine's. A process confined to some of the cores (a batch
scheduler's allocation: SLURM, PBS and Kubernetes pin a job's processes to its cores) does not
share them with the load on the others, so there every usable core is taken: on a busy 64-core
node, an 8-core job would otherwise drop to one thread.

NumPy's BLAS (OpenBLAS) has its own threads and the same problem: a dot product of two
rank vectors (Spearman, 110,592 voxels) took 3.4-4.2 ms with its two threads under that load
and 0.01-0.02 ms with one. Evaluate's BLAS work is that small everywhere (dot products, norms),
so it always runs on one BLAS thread (threadpoolctl, scikit-learn's tool for this), which also
keeps its sums in one order whatever the machine's load.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits

log = logging.getLogger("xaimed")


def idle_cores(usable: int | None = None, machine: int | None = None) -> int | None:
    """Cores this process may use minus the machine's 1-minute load average, rounded (at least
    1); None where the platform gives no load average (Windows) or where the process is confined
    to fewer cores than the machine has (the load then mostly runs on cores it cannot use).

    ``usable`` and ``machine`` default to the process's affinity and the machine's core count."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    if usable is None:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    machine = machine if machine is not None else os.cpu_count()
    if usable is None or machine is None:
        usable = usable or machine or 1
    elif usable < machine:
        return None
    return max(1, round(usable - load))


@contextmanager
def cpu_threads(configured: int | None, *, adapt: bool = True) -> Iterator[int]:
    """Run the block on ``configured`` CPU threads when given, else (with ``adapt``) on the idle
    cores, never more than torch's default, and NumPy's BLAS on one thread; both settings are
    restored afterwards (they are process-wide)."""
    default = torch.get_num_threads()
    idle = idle_cores() if adapt else None
    threads = configured or (default if idle is None else min(default, idle))
    if threads != default and not configured:
        log.info(
            "evaluate runs on %d CPU thread(s) of %d: the other cores are busy (load average "
            "%.1f); set runtime.threads to choose",
            threads, default, os.getloadavg()[0],
        )  # fmt: skip
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield threads
    finally:
        torch.set_num_threads(default)
