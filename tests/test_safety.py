"""Hostile and careless input (issue 19): each test reproduces one way a run went wrong.

Colliding case ids and class names, non-finite arithmetic, file names of any bytes, outputs
inside the input, two runs in one folder, FIFOs, headers declaring huge sizes, and the free-text
Series Description in logs. Every bad case must fail with one sentence while the rest of the run
is done, and nothing may be silently overwritten or marked ``ok`` when it is garbage.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import ROOT, blob_volume, tiny_config, write_nifti
from dicom_helpers import write_study
from typer.testing import CliRunner

from xaimed.cli import app
from xaimed.config import PreprocessingSection
from xaimed.errors import InputError, OutputError, XaimedError
from xaimed.io.nifti import read_nifti
from xaimed.pipeline import explain
from xaimed.preprocess import prepare
from xaimed.writers.manifest import read_manifest as resolved_rows
from xaimed.writers.sidecar import write_sidecar

runner = CliRunner()


def strict_json(path: Path) -> dict:
    """Parse with a strict parser: NaN, Infinity and -Infinity tokens are refused."""

    def refuse(token: str) -> None:
        raise ValueError(f"{path.name}: non-standard JSON token {token}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def read_manifest(path: Path) -> list[dict[str, str]]:
    return resolved_rows(path)


def config_file(tmp_path: Path, tiny_state: Path, **sections) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_state, **sections)))
    return path


# 1. Case ids and class names that collide ---------------------------------------------------


def test_colliding_file_names_get_distinct_stable_ids(tmp_path: Path, tiny_state: Path) -> None:
    cases = tmp_path / "in"
    shape = (12, 12, 10)
    names = ["scan.nii", "scan.nii.gz", "a b.nii.gz", "a_b.nii.gz"]
    for seed, name in enumerate(names):
        write_nifti(cases / name, blob_volume(shape, (6, 6, 5), seed=seed), np.eye(4))
    config = config_file(tmp_path, tiny_state)

    first = explain(cases, config, tmp_path / "out")
    ids = [r["case_id"] for r in first.rows]
    assert all(r["status"] == "ok" for r in first.rows)
    assert len(set(ids)) == 4, ids
    assert {i.rsplit("-", 1)[0] for i in ids} == {"scan", "a_b"}
    # Each id's sidecar and map belong to its own file, not to the case it collided with.
    by_source = {Path(r["source"]).name: r for r in first.rows}
    assert set(by_source) == set(names)
    for name, row in by_source.items():
        sidecar = strict_json(Path(row["sidecar"]))
        assert Path(sidecar["source"]["path"]).name == name
        source = nib.load(str(cases / name)).get_fdata()
        assert sidecar["map"]["sum"] != 0 and source.shape == shape
    maps = {Path(r["nifti"]) for r in first.rows}
    assert len(maps) == 4

    second = explain(cases, config, tmp_path / "out")
    assert [r["case_id"] for r in second.rows] == ids  # stable across runs
    assert all(r["resumed"] == "yes" for r in second.rows)
    for row in second.rows:
        record = strict_json(Path(row["sidecar"]))
        assert Path(record["source"]["path"]).name == Path(row["source"]).name


@pytest.mark.parametrize("classes", [["a (b)", "a-b"], ["dominant", "other"]])
def test_class_names_that_clean_up_alike_keep_their_own_maps(
    tmp_path: Path, tiny_state: Path, classes: list[str]
) -> None:
    write_nifti(tmp_path / "in" / "c1.nii.gz", blob_volume((12, 12, 10), (6, 6, 5)), np.eye(4))
    model = tiny_config(tiny_state)["model"] | {"classes": classes}
    config = config_file(tmp_path, tiny_state, model=model, target={"class": "all"})

    result = explain(tmp_path / "in", config, tmp_path / "out")
    assert [r["status"] for r in result.rows] == ["ok"] * 3
    assert [r["target"] for r in result.rows] == [*classes, "dominant"]
    paths = [Path(r["nifti"]) for r in result.rows]
    assert len(set(paths)) == 3, paths  # nothing overwritten
    for row in result.rows[:2]:
        assert strict_json(Path(row["sidecar"]))["target"]["name"] == row["target"]
    dominant = strict_json(Path(result.rows[2]["sidecar"]))
    assert dominant["rule"].startswith("argmax")
    assert nib.load(str(paths[2])).get_fdata().max() <= 1  # the label map, not a class's map


def test_case_list_ids_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    from xaimed.io.cases import discover_cases

    image = write_nifti(tmp_path / "x.nii.gz", blob_volume((8, 8, 8), (4, 4, 4)), np.eye(4))
    listing = tmp_path / "cases.csv"
    listing.write_text(f"case_id,path\nCase1,{image}\ncase1,{image}\n")
    with pytest.raises(InputError, match="differ only in upper/lower case"):
        discover_cases(listing)


# 3. Non-finite arithmetic -------------------------------------------------------------------


def test_non_finite_arithmetic_fails_the_case_with_the_step(
    tmp_path: Path, tiny_state: Path
) -> None:
    cases = tmp_path / "in"
    base = blob_volume((16, 16, 12), (8, 8, 6)).astype(np.float32)
    write_nifti(cases / "fine.nii.gz", base, np.eye(4), dtype=np.float32)
    # 3e38 voxels: without normalisation the model's output is NaN.
    write_nifti(cases / "huge.nii.gz", base * 0 + 3e38, np.eye(4), dtype=np.float32)
    # Slices 400 mm apart, resampled to 4 mm and cropped: no source voxel in the model's view.
    thick = blob_volume((16, 16, 2), (8, 8, 1)).astype(np.float32)
    write_nifti(cases / "thick.nii.gz", thick, np.diag([4.0, 4.0, 400.0, 1.0]), dtype=np.float32)
    config = config_file(
        tmp_path,
        tiny_state,
        preprocessing={
            "resample": {"spacing": [4.0, 4.0, 4.0]},
            "crop_pad": {"size": [16, 16, 16]},
        },
    )
    result = explain(cases, config, tmp_path / "out")
    rows = {r["case_id"]: r for r in result.rows}
    assert rows["fine"]["status"] == "ok"
    assert rows["huge"]["status"] == "failed"
    assert "the model's output has" in rows["huge"]["error"]
    assert "NaN or infinite" in rows["huge"]["error"]
    assert rows["thick"]["status"] == "failed"
    assert "no source voxel lies inside the model's field of view" in rows["thick"]["error"]
    for sidecar in (tmp_path / "out").rglob("*.json"):
        if ".done" not in sidecar.parts:
            strict_json(sidecar)


def test_zscore_of_voxels_near_1e20_is_computed_not_zeroed(
    tmp_path: Path, tiny_state: Path
) -> None:
    data = (blob_volume((12, 12, 10), (6, 6, 5)) * 1e18).astype(np.float32)
    write_nifti(tmp_path / "in" / "big.nii.gz", data, np.eye(4), dtype=np.float32)
    config = config_file(tmp_path, tiny_state)  # zscore intensity
    (row,) = explain(tmp_path / "in", config, tmp_path / "out").rows
    assert row["status"] == "ok"
    record = strict_json(Path(row["sidecar"]))
    (intensity,) = [s for s in record["preprocessing"] if s["step"] == "intensity"]
    expected = np.asarray(data, dtype=np.float64)
    assert intensity["std"][0] == pytest.approx(expected.std(), rel=1e-4)
    assert intensity["mean"][0] == pytest.approx(expected.mean(), rel=1e-4)
    assert record["map"]["max"] > 0  # the model saw the normalised image, not zeros


def test_resample_overflow_is_named(tmp_path: Path) -> None:
    # Cubic interpolation overshoots at a step between the extremes of float32's range.
    data = np.full((8, 8, 8), 3.4e38, np.float32)
    data[4:] = -3.4e38
    path = write_nifti(tmp_path / "x.nii.gz", data, np.eye(4), dtype=np.float32)
    steps = PreprocessingSection.model_validate({"resample": {"spacing": [0.3] * 3, "order": 3}})
    with pytest.raises(InputError, match="preprocessing step 'resample' produced"):
        prepare(read_nifti(path), steps)


def test_sidecar_refuses_non_finite_numbers(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"sidecar field prediction\.logits\[1\] is nan"):
        write_sidecar({"prediction": {"logits": [0.5, float("nan")]}}, tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


# 4. File names of any bytes -----------------------------------------------------------------


def test_non_utf8_file_name_runs_and_is_escaped_in_the_manifest(
    tmp_path: Path, tiny_state: Path
) -> None:
    cases = tmp_path / "in"
    odd = os.fsdecode(b"scan\xff\xfe.nii.gz")
    write_nifti(cases / odd, blob_volume((12, 12, 10), (6, 6, 5)), np.eye(4))
    write_nifti(cases / "plain.nii.gz", blob_volume((12, 12, 10), (6, 6, 5), seed=1), np.eye(4))
    config = config_file(tmp_path, tiny_state)
    out = tmp_path / "out"
    result = runner.invoke(app, ["explain", str(cases), "-c", str(config), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_manifest(out / "manifest.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    (row,) = [r for r in rows if r["case_id"] != "plain"]
    assert row["case_id"] == "scan"
    assert row["source"].endswith("scan\\xff\\xfe.nii.gz")
    sidecar = strict_json(out / "scan" / "scan_saliency.json")
    assert sidecar["source"]["path"].endswith("scan\\xff\\xfe.nii.gz")


# 5. Outputs inside the input; empty output path -----------------------------------------------


def test_output_folder_inside_the_input_is_not_discovered(tmp_path: Path, tiny_state: Path) -> None:
    cases = tmp_path / "in"
    write_nifti(cases / "c1.nii.gz", blob_volume((12, 12, 10), (6, 6, 5)), np.eye(4))
    config = config_file(tmp_path, tiny_state)
    first = explain(cases, config, cases / "results")
    second = explain(cases, config, cases / "results")
    assert [r["case_id"] for r in first.rows] == ["c1"]
    assert [r["case_id"] for r in second.rows] == ["c1"]
    assert second.rows[0]["resumed"] == "yes"


@pytest.mark.parametrize("out", ["", "."])
def test_empty_or_dot_output_path_is_refused(
    tmp_path: Path, tiny_state: Path, monkeypatch: pytest.MonkeyPatch, out: str
) -> None:
    cases = tmp_path / "in"
    write_nifti(cases / "c1.nii.gz", blob_volume((12, 12, 10), (6, 6, 5)), np.eye(4))
    config = config_file(tmp_path, tiny_state)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["explain", str(cases), "-c", str(config), "-o", out])
    assert result.exit_code != 0
    assert "an empty or '.' output folder" in result.output
    assert list(work.iterdir()) == []
    with pytest.raises(XaimedError, match="output folder holds the input"):
        explain(cases, config, tmp_path)


# 7. Two runs into one folder ----------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from pathlib import Path
from xaimed.run.lock import run_lock
with run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_second_run_into_a_busy_folder_is_refused_and_stale_lock_taken_over(
    tmp_path: Path, tiny_state: Path
) -> None:
    cases = tmp_path / "in"
    write_nifti(cases / "c1.nii.gz", blob_volume((12, 12, 10), (6, 6, 5)), np.eye(4))
    config = config_file(tmp_path, tiny_state)
    out = tmp_path / "out"
    out.mkdir()
    # A temporary of the first run, in flight: the second run must not touch it.
    temporary = out / "c1" / ".tmp-host-1-c1_saliency.nii.gz"
    temporary.parent.mkdir()
    temporary.write_bytes(b"partial")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True,
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(XaimedError, match=rf"another xaimed run is writing .*{holder.pid}"):
            explain(cases, config, out)
        assert temporary.read_bytes() == b"partial"
        assert not (out / "manifest.csv").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # The holder died without cleaning up: its lock file is still there, and is taken over.
    assert str(holder.pid) in (out / ".lock").read_text()
    (row,) = explain(cases, config, out).rows
    assert row["status"] == "ok"
    assert str(os.getpid()) in (out / ".lock").read_text()


# 8. FIFOs -----------------------------------------------------------------------------------


def test_fifo_in_a_case_list_fails_its_case_and_does_not_hang(
    tmp_path: Path, tiny_state: Path
) -> None:
    image = write_nifti(tmp_path / "c1.nii.gz", blob_volume((12, 12, 10), (6, 6, 5)), np.eye(4))
    fifo = tmp_path / "pipe.nii.gz"
    os.mkfifo(fifo)
    listing = tmp_path / "cases.csv"
    listing.write_text(f"case_id,path\npiped,{fifo}\nc1,{image}\n")
    config = config_file(tmp_path, tiny_state)
    started = time.monotonic()
    rows = {r["case_id"]: r for r in explain(listing, config, tmp_path / "out").rows}
    assert time.monotonic() - started < 120
    assert rows["c1"]["status"] == "ok"
    assert rows["piped"]["status"] == "failed"
    assert rows["piped"]["error"].startswith("case piped:")
    assert "not a regular file or folder (a FIFO, device or socket)" in rows["piped"]["error"]


def test_fifo_in_a_folder_is_skipped_and_as_input_refused(tmp_path: Path) -> None:
    from xaimed.io.cases import discover_cases

    cases = tmp_path / "in"
    write_nifti(cases / "c1.nii.gz", blob_volume((8, 8, 8), (4, 4, 4)), np.eye(4))
    os.mkfifo(cases / "pipe.nii.gz")
    os.mkfifo(cases / "IM0001")  # extension-less, like DICOM exports
    assert [c.case_id for c in discover_cases(cases)] == ["c1"]
    with pytest.raises(InputError, match=r"INPUT: .* is not a regular file or folder"):
        discover_cases(cases / "pipe.nii.gz")


# 9. Header-declared sizes -------------------------------------------------------------------


def huge_header_file(path: Path) -> Path:
    """A NIfTI header claiming 4000^3 int16 voxels, followed by a few bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.int16)
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4))
    with path.open("wb") as fh:
        fh.write(header.binaryblock)
        fh.write(b"\0" * 4)  # extension flag
        fh.write(img.get_fdata().astype(np.int16).tobytes())
    return path


def test_header_declaring_huge_volume_is_refused_before_reading(
    tmp_path: Path, tiny_state: Path
) -> None:
    cases = tmp_path / "in"
    cases.mkdir()
    huge_header_file(cases / "huge.nii")
    write_nifti(cases / "fine.nii.gz", blob_volume((12, 12, 10), (6, 6, 5)), np.eye(4))
    with pytest.raises(InputError, match=r"declares 4000 x 4000 x 4000 voxels, 238\.4 GiB"):
        read_nifti(cases / "huge.nii", memory_budget=2**30)
    with pytest.raises(InputError, match="more than the memory available now"):
        read_nifti(cases / "huge.nii")  # no budget: the host's available memory is the limit
    runtime = {"device": "cpu", "threads": 1, "memory_budget": "1GB"}
    config = config_file(tmp_path, tiny_state, runtime=runtime)
    rows = {r["case_id"]: r for r in explain(cases, config, tmp_path / "out").rows}
    assert rows["fine"]["status"] == "ok"
    assert rows["huge"]["status"] == "failed"
    assert "more than runtime.memory_budget" in rows["huge"]["error"]
    assert "MemoryError" not in rows["huge"]["error"]


# 11. Series Description out of logs -----------------------------------------------------------


def test_series_description_stays_out_of_logs(tmp_path: Path, tiny_state: Path) -> None:
    secret = "Jane Doe follow-up"
    write_study(tmp_path / "in" / "p1", shape=(12, 12, 8), series_description=secret)
    config = config_file(tmp_path, tiny_state)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["explain", str(tmp_path / "in"), "-c", str(config), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert secret not in result.output
    logs = [p.read_text(encoding="utf-8") for p in (out / "logs").rglob("*") if p.is_file()]
    assert logs and all(secret not in text for text in logs)
    assert "explaining series #1 MR (8 planes)" in "".join(logs)
    assert secret not in (out / "manifest.csv").read_text(encoding="utf-8")


def test_dicom_headers_declaring_huge_planes_are_refused_before_decoding(tmp_path: Path) -> None:
    import pydicom

    from xaimed.config import DicomSection
    from xaimed.io.dicom import scan_dicom
    from xaimed.io.dicom.select import read_study

    study = tmp_path / "s"
    shutil.copytree(ROOT / "tests" / "data" / "dicom" / "hitachi" / "001", study)
    for path in study.iterdir():
        ds = pydicom.dcmread(path)
        ds.Rows = ds.Columns = 65535  # the pixel data stay 64 x 64
        ds.save_as(path)
    (found,) = scan_dicom(study)
    with pytest.raises(InputError, match=r"declares 65535 x 65535 x 4 voxels, 64\.0 GiB"):
        read_study(found, DicomSection(), case_id="c", memory_budget=2**30)
