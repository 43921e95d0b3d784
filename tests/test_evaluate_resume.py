"""`xaimed evaluate` stopped by SIGTERM: exit 75, metrics of the finished cases, a log file and
progress lines; the rerun skips what was recorded and ends with the uninterrupted run's metrics."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TESTS, blob_volume, oblique_affine, write_nifti

from xaimed.pipeline import explain
from xaimed.progress import LogReporter
from xaimed.run.signals import EXIT_INTERRUPTED

DRIVER = TESTS / "run_driver.py"
CASES = ("a", "b", "c")
KINDS = ("localisation", "faithfulness", "robustness")


@pytest.fixture
def run(tmp_path: Path, make_config) -> Path:
    """Three cases explained with saliency; evaluate settings for three cheap metric kinds."""
    affine = oblique_affine((2.0, 2.0, 2.0), "RAS")
    for seed, case in enumerate(CASES):
        write_nifti(tmp_path / "images" / f"{case}.nii.gz", blob_volume(seed=seed), affine)
        mask = np.zeros((20, 18, 14))
        mask[8:13, 7:12, 5:10] = 1
        write_nifti(tmp_path / "masks" / f"{case}.nii.gz", mask, affine, dtype=np.uint8)
    config = make_config(
        evaluate={
            "metrics": list(KINDS),
            "masks": str(tmp_path / "masks" / "{case_id}.nii.gz"),
            "faithfulness": {"steps": 5},
            "robustness": {"samples": 2},
        }
    )
    explain(tmp_path / "images", config, tmp_path / "run", reporter=LogReporter())
    return tmp_path / "run"


def _evaluate(run: Path, out: Path, mode: str = "none", n: int = 0, **env: str):
    return subprocess.Popen(
        [sys.executable, str(DRIVER), mode, str(n), "evaluate", str(run), "-o", str(out)],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _metrics(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_sigterm_stops_evaluate_with_75_and_the_rerun_completes(run, tmp_path):
    reference = tmp_path / "reference"
    child = _evaluate(run, reference)
    _, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr
    expected = _metrics(reference)
    assert {r["case_id"] for r in expected} == set(CASES)

    out, marker = tmp_path / "evaluation", tmp_path / "paused"
    # The 4th record is the first kind of the second case; SIGTERM comes right after it.
    child = _evaluate(run, out, "pause-after-record", 4, XAIMED_TEST_MARKER=str(marker))
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=300)
    assert child.returncode == EXIT_INTERRUPTED == 75, stderr
    assert "run the same command again to resume" in stderr
    # Progress with an ETA between cases, and a log file holding the same lines.
    assert "cases 1/3: a evaluated (ETA " in stderr and "shard" not in stderr
    logs = sorted((out / "logs").glob("evaluate-*.log"))
    assert len(logs) == 1 and "SIGTERM received" in logs[0].read_text()
    partial = _metrics(out)
    # Case a complete, case b's first kind (localisation), nothing of case c.
    assert [r for r in partial if r["case_id"] == "a"] == [
        r for r in expected if r["case_id"] == "a"
    ]
    record_b = json.loads((out / "evaluation" / "records" / "b.json").read_text())
    assert set(record_b["kinds"]) == {"localisation"}
    localisation = {r["metric"] for r in record_b["kinds"]["localisation"]["rows"]}
    assert "pointing_game" in localisation and "deletion_auc" not in localisation
    assert [r for r in partial if r["case_id"] == "b"] == [
        r for r in expected if r["case_id"] == "b" and r["metric"] in localisation
    ]
    assert "c" not in {r["case_id"] for r in partial}
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["complete"] is False

    child = _evaluate(run, out)
    _, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr
    assert "4 case x metric(s) done earlier and skipped" in stderr
    assert _metrics(out) == expected
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["complete"] is True
    # Each kind's cost: wall time per case over every case, reused records included.
    assert set(summary["cost"]) == set(KINDS)
    assert all(c["cases"] == 3 and c["seconds_per_case"] > 0 for c in summary["cost"].values())


def test_overwrite_redoes_recorded_work(run, tmp_path):
    out = tmp_path / "evaluation"
    for args, skipped in (((), False), ((), True), (("--overwrite",), False)):
        child = subprocess.run(
            [sys.executable, "-m", "xaimed", "evaluate", str(run), "-o", str(out), *args],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert child.returncode == 0, child.stderr
        assert ("done earlier and skipped" in child.stderr) is skipped, child.stderr
    records = sorted(p.name for p in (out / "evaluation" / "records").iterdir())
    assert records == [f"{case}.json" for case in CASES]
