"""A run folder is relocatable: its manifest and completion records name outputs relative to
the run, `evaluate` reads and checks (by SHA-256) the maps of the folder it is given, and
`explain` on a moved run resumes."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from conftest import blob_volume, oblique_affine, write_nifti
from test_cli import _invoke
from tiny_models import TinyCNN

from xaimed.run.records import RECORD_DIR
from xaimed.writers.manifest import PATH_COLUMNS
from xaimed.writers.outputs import FILE_COLUMNS

AFFINE = oblique_affine((1.5, 2.0, 3.0), "LPS")


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def finished(tmp_path: Path, make_config) -> tuple[Path, Path, Path]:
    """Three cases explained with saliency into run/: (inputs, config, run)."""
    images = tmp_path / "images"
    for seed, name in enumerate(("a", "b", "c")):
        write_nifti(images / f"{name}.nii.gz", blob_volume(seed=seed), AFFINE)
    config = make_config(evaluate={"faithfulness": {"steps": 4}})
    result, text = _invoke("explain", images, "-c", config, "-o", tmp_path / "run")
    assert result.exit_code == 0, text
    return images, config, tmp_path / "run"


def test_path_columns_are_the_writers_columns() -> None:
    assert set(FILE_COLUMNS) == set(PATH_COLUMNS)


def test_copied_run_reads_its_own_maps_and_fails_a_truncated_one(finished, tmp_path) -> None:
    _, _, run = finished
    rows = _rows(run)
    assert all(not Path(r["nifti"]).is_absolute() for r in rows if r["nifti"])
    record = json.loads((run / "a" / RECORD_DIR / "saliency.json").read_text())
    assert all(not Path(r["nifti"]).is_absolute() for r in record["rows"])
    assert len(record["sha256"]["a/" + Path(rows[0]["nifti"]).name]) == 64

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    by_case = {r["case_id"]: r for r in rows}
    truncated = copy / by_case["b"]["nifti"]
    truncated.write_bytes(truncated.read_bytes()[:100])
    # The original's map of case c is gone: a copy that read the original would fail c too.
    (run / by_case["c"]["nifti"]).unlink()

    out = tmp_path / "evaluation"
    result, text = _invoke("evaluate", copy, "-o", out, "--metric", "faithfulness", "-q")
    assert result.exit_code == 1, text
    failures = json.loads((out / "evaluation.json").read_text())["failures"]
    assert len(failures) == 1, failures
    assert "case b" in failures[0] and str(truncated) in failures[0], failures
    assert "SHA-256" in failures[0]
    with (out / "metrics.csv").open(newline="", encoding="utf-8") as fh:
        cases = {r["case_id"] for r in csv.DictReader(fh)}
    assert cases == {"a", "c"}


def test_moved_run_evaluates_and_resumes(finished, tmp_path) -> None:
    images, config, run = finished
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(run, moved)

    out = tmp_path / "evaluation"
    result, text = _invoke("evaluate", moved, "-o", out, "--metric", "faithfulness", "-q")
    assert result.exit_code == 0, text
    assert json.loads((out / "evaluation.json").read_text())["failures"] == []

    before = {p: p.stat().st_mtime_ns for p in moved.rglob("*.nii.gz")}
    result, text = _invoke("explain", images, "-c", config, "-o", moved)
    assert result.exit_code == 0, text
    rows = _rows(moved)
    assert [r["resumed"] for r in rows] == ["yes"] * 3
    assert all((moved / r["nifti"]).is_file() for r in rows)
    assert {p: p.stat().st_mtime_ns for p in moved.rglob("*.nii.gz")} == before


def test_agreement_metric_runs_to_the_end(tmp_path, make_config) -> None:
    """Two methods and no checkpoints: only pairwise agreement, which has no table to draw."""
    images = tmp_path / "images"
    write_nifti(images / "a.nii.gz", blob_volume(seed=0), AFFINE)
    config = make_config(methods=["saliency", "input_x_gradient"])
    result, text = _invoke("explain", images, "-c", config, "-o", tmp_path / "run")
    assert result.exit_code == 0, text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty figure warns; the table must not be drawn
        result, text = _invoke("evaluate", tmp_path / "run", "--metric", "agreement", "-q")
    assert result.exit_code == 0, text
    assert result.exception is None or isinstance(result.exception, SystemExit)
    with (tmp_path / "run" / "metrics.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["saliency vs input_x_gradient"], rows
    assert -1.0 <= float(rows[0]["value"]) <= 1.0
    assert not (tmp_path / "run" / "evaluation_table.png").exists()


def test_agreement_with_a_checkpoint_draws_the_table(tmp_path, make_config) -> None:
    images = tmp_path / "images"
    write_nifti(images / "a.nii.gz", blob_volume(seed=0), AFFINE)
    torch.manual_seed(3)
    torch.save(TinyCNN().state_dict(), tmp_path / "other.pt")
    config = make_config(evaluate={"agreement": {"checkpoints": [str(tmp_path / "other.pt")]}})
    result, text = _invoke("explain", images, "-c", config, "-o", tmp_path / "run")
    assert result.exit_code == 0, text
    result, text = _invoke("evaluate", tmp_path / "run", "--metric", "agreement", "-q")
    assert result.exit_code == 0, text
    assert (tmp_path / "run" / "evaluation_table.png").stat().st_size > 1000
