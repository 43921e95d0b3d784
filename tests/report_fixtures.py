"""A small real run of the bundled sample model for the report tests (shared by the plain and
the browser tests; imported by both, so that pytest builds it once per session)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "sample_data"


def sample_config(tmp: Path, **extra) -> Path:
    """The sample config with two fast methods (a signed one and a non-negative one)."""
    config = yaml.safe_load((ROOT / "configs" / "sample.yaml").read_text())
    config["model"]["weights"] = str(ROOT / "xaimed" / "sample" / "sample_cnn_state.pt")
    config["methods"] = [{"name": "integrated_gradients", "params": {"steps": 8}},
                         {"name": "grad_cam"}]  # fmt: skip
    config["runtime"] = {"device": "cpu", "seed": 0}
    config["evaluate"] = {
        "masks": str(SAMPLE / "masks" / "{case_id}_lesion.nii.gz"),
        "metrics": ["localisation", "faithfulness"],
        "faithfulness": {"steps": 5},
    }
    config.update(extra)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def xaimed(*args: str) -> subprocess.CompletedProcess:
    """Run the xaimed command as a user would."""
    command = Path(sys.executable).parent / "xaimed"
    return subprocess.run([str(command), *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session", name="sample_run")
def sample_run_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An explained and evaluated run: case01 (RAS, lesion), case03 (LPS, 3.5 x 3.5 x 5 mm,
    lesion) and a corrupt file that fails with its reason. Its report is written by explain and
    refreshed by evaluate, through the hooks."""
    tmp = tmp_path_factory.mktemp("report-run")
    images = tmp / "images"
    images.mkdir()
    for case in ("case01", "case03"):
        shutil.copy(SAMPLE / "images" / f"{case}.nii.gz", images)
    (images / "broken.nii.gz").write_bytes(b"not a NIfTI file")
    config = sample_config(tmp)
    run = tmp / "run"
    done = xaimed("explain", str(images), "--config", str(config), "--out", str(run), "-q")
    assert done.returncode == 1, done.stderr  # the broken case fails, the others are done
    done = xaimed("evaluate", str(run), "-q")
    assert done.returncode == 0, done.stderr
    return run
