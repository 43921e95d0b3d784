"""Run ``xaimed`` in a child process with a fault injected at a chosen point (tests only).

    python run_driver.py MODE N [xaimed arguments...]

MODE says where the process is hit on the N-th occurrence (counting from 1):

- ``kill-between-cases``: SIGKILL right after the N-th case is collected (and the manifest
  rewritten, which a short run does after every case);
- ``kill-in-method``: SIGKILL as the N-th method run of the process starts;
- ``kill-in-write``: SIGKILL after the N-th output whose final name contains
  ``XAIMED_TEST_MATCH`` is complete under its temporary name, before it is renamed to its final
  name (the temporary is left behind);
- ``pause-in-method``: at the N-th method run, create the file named by ``XAIMED_TEST_MARKER``
  and sleep 3 s inside the method, so the test can signal a run that is mid-work;
- ``pause-after-record``: after the N-th per-case record of ``xaimed evaluate`` is saved, create
  the file named by ``XAIMED_TEST_MARKER`` and sleep 3 s, so the test can signal an evaluation
  between two metric kinds;
- ``none``: no fault.

Patching here keeps fault injection out of xaimed itself.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def _nth(n: int):
    count = {"calls": 0}

    def hit() -> bool:
        count["calls"] += 1
        return count["calls"] == n

    return hit


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    mode, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    hit = _nth(n)
    if mode == "kill-between-cases":
        from xaimed.run import cohort

        done = cohort._Collector.done

        def done_then_die(self, job, outcome) -> None:
            done(self, job, outcome)  # rewrites the manifest when a rewrite is due
            if hit():
                _die()

        cohort._Collector.done = done_then_die
    elif mode in ("kill-in-method", "pause-in-method"):
        from xaimed.run import worker

        run_method = worker.Explainer._run_method

        def patched(self, *a, **k):
            if hit():
                if mode == "kill-in-method":
                    _die()
                Path(os.environ["XAIMED_TEST_MARKER"]).touch()
                time.sleep(3)
            return run_method(self, *a, **k)

        worker.Explainer._run_method = patched
    elif mode == "pause-after-record":
        from xaimed.evaluate import runner

        save = runner.save_records

        def save_then_pause(*a, **k) -> None:
            save(*a, **k)
            if hit():
                Path(os.environ["XAIMED_TEST_MARKER"]).touch()
                time.sleep(3)

        runner.save_records = save_then_pause
    elif mode == "kill-in-write":
        replace = os.replace
        match = os.environ.get("XAIMED_TEST_MATCH", "")

        def replace_or_die(src, dst, *a, **k):
            ours = Path(src).name.startswith(".tmp-") and match in Path(dst).name
            if ours and hit():
                _die()
            return replace(src, dst, *a, **k)

        os.replace = replace_or_die
    elif mode != "none":
        raise SystemExit(f"unknown mode {mode}")
    from xaimed.cli import app

    app(args, prog_name="xaimed")


if __name__ == "__main__":
    main()
