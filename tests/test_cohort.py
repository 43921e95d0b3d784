"""Cohort runs: resume after SIGKILL, SIGTERM, shards and merge, case lists, executors.

Every run here explains the same small cohort (three NIfTI cases with different geometry and one
DICOM study) with a gradient method, integrated gradients and occlusion, so that maps, sidecars,
PNGs, a Parametric Map and Secondary Captures are all written. "Identical" means byte-identical
files, sidecars compared without their timing fields (``wall_s``, ``created``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TESTS, blob_volume, oblique_affine, tiny_config, write_nifti
from dicom_helpers import write_study
from typer.testing import CliRunner

from xaimed.cli import app
from xaimed.run.signals import EXIT_INTERRUPTED
from xaimed.writers.manifest import TIMING_COLUMNS, ManifestRow, read_manifest

runner = CliRunner()
DRIVER = TESTS / "run_driver.py"
SIDECAR_TIMING = ("wall_s", "created")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, tiny_state: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cohort")
    cases = root / "cases"
    write_nifti(cases / "a.nii.gz", blob_volume((20, 18, 14)), oblique_affine())
    write_nifti(cases / "b.nii.gz", blob_volume((16, 16, 12), (8, 8, 6), seed=1), np.eye(4))
    write_nifti(cases / "c" / "c.nii.gz", blob_volume((18, 18, 18), (5, 9, 9), seed=2),
                np.diag([2.0, 2.0, 2.0, 1.0]))  # fmt: skip
    write_study(cases / "dicom" / "p1", seed="patient-one", shape=(16, 14, 10))
    config = tiny_config(
        tiny_state,
        target={"class": 1},
        methods=[
            {"name": "saliency"},
            {"name": "integrated_gradients", "params": {"steps": 8}},
            {"name": "occlusion", "params": {"window": 6, "stride": 6}},
        ],
        outputs={"png": True},
        # A fixed batch size: the default follows free memory, which differs between processes.
        runtime={"device": "cpu", "threads": 1, "batch_size": 4},
    )
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return {"root": root, "cases": cases, "config": path}


def _invoke(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout + (result.stderr or "")


def _explain(cohort: dict[str, Path], out: Path, *extra: object) -> tuple[int, str]:
    return _invoke("explain", cohort["cases"], "-c", cohort["config"], "-o", out, "-q", *extra)


def _child(mode: str, n: int, cohort: dict[str, Path], out: Path, **env: str):
    args = ["explain", str(cohort["cases"]), "-c", str(cohort["config"]), "-o", str(out), "-q"]
    return subprocess.Popen(
        [sys.executable, str(DRIVER), mode, str(n), *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _manifest(path: Path) -> list[ManifestRow]:
    return read_manifest(path)  # output paths resolved against the run


def _outputs(out: Path) -> dict[str, bytes]:
    """Every output file by relative path; sidecars without their timing fields."""
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        # The HTML report is a view of the run (it shows resumed cases as skipped, and times).
        if not path.is_file() or rel.parts[0] in ("logs", "report") or ".done" in rel.parts:
            continue
        if rel.name.startswith(("manifest", ".lock")):  # .lock: who holds the folder (pid)
            continue
        data = path.read_bytes()
        if path.suffix == ".json" and rel.name != "config.json":
            body = json.loads(data)
            for key in SIDECAR_TIMING:
                body.pop(key, None)
            data = json.dumps(body, sort_keys=True).encode()
        files[str(rel)] = data
    return files


def _rows(rows: list[ManifestRow], out: Path) -> list[dict[str, object]]:
    """Manifest rows without timing columns, output paths relative to the run folder."""
    cleaned = []
    for row in rows:
        row = {
            k: v.replace(str(out), "OUT") if isinstance(v, str) else v
            for k, v in row.items()
            if k not in TIMING_COLUMNS
        }
        cleaned.append(row)
    return cleaned


def _difference(name: str, ours: bytes, theirs: bytes | None) -> str:
    """Where a file differs from the reference's, in words: the sidecar fields (dotted keys,
    with both values) or, for other files, the sizes and the first differing byte."""
    if theirs is None:
        return f"{name}: not in the reference run"
    if name.endswith(".json"):
        fields: list[str] = []
        _differing_fields(json.loads(ours), json.loads(theirs), "", fields)
        return f"{name}: {'; '.join(fields)}"
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
    return f"{name}: {len(ours)} against {len(theirs)} bytes, first difference at byte {first}"


def _differing_fields(ours: object, theirs: object, key: str, found: list[str]) -> None:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for k in sorted(set(ours) | set(theirs)):
            _differing_fields(ours.get(k), theirs.get(k), f"{key}.{k}", found)
    elif ours != theirs:
        found.append(f"{key.lstrip('.')}: {ours!r} (killed run) against {theirs!r} (reference)")


def _temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob(".tmp-*")]


@pytest.fixture(scope="module")
def reference(cohort: dict[str, Path]) -> Path:
    """The uninterrupted run every other run is compared with."""
    out = cohort["root"] / "reference"
    code, text = _explain(cohort, out)
    assert code == 0, text
    rows = _manifest(out / "manifest.csv")
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}
    assert {r["resumed"] for r in rows} == {""}
    # Per-method resources are in the manifest.
    assert all(float(r["peak_host_mib"]) > 0 and int(r["forward_passes"]) > 0 for r in rows)
    dicom = [r for r in rows if r["dicom_pm"]]
    assert len(dicom) == 3 and all(Path(r["dicom_sc"]).is_dir() for r in dicom)
    return out


@pytest.mark.parametrize(
    ("mode", "n", "match"),
    [
        ("kill-between-cases", 2, ""),  # two cases done, two to go
        ("kill-in-method", 5, ""),  # inside the second case, after one of its methods
        ("kill-in-write", 3, ".nii.gz"),  # the third map's NIfTI, complete but not renamed
        ("kill-in-write", 2, "_pm.dcm"),  # a Parametric Map
        ("kill-in-write", 1, "_sc"),  # a Secondary Capture series (a folder)
    ],
)
def test_sigkill_then_resume_gives_the_uninterrupted_outputs(
    cohort, reference, tmp_path, mode, n, match
):
    out = tmp_path / "run"
    child = _child(mode, n, cohort, out, XAIMED_TEST_MATCH=match)
    child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL
    if mode == "kill-in-write":
        # The kill left the output under its temporary name only.
        leftovers = _temporaries(out)
        assert leftovers and all(match in p.name for p in leftovers), leftovers
    partial = {name: data for name, data in _outputs(out).items() if ".tmp-" not in name}
    assert 0 < len(partial) < len(_outputs(reference))
    # Nothing under a final name is partial: every file there equals the reference's.
    expected = _outputs(reference)
    differ = [n for n in partial if n != "config.json" and partial[n] != expected.get(n)]
    assert not differ, [_difference(n, partial[n], expected.get(n)) for n in differ]

    code, text = _explain(cohort, out)
    assert code == 0, text
    assert _temporaries(out) == []
    assert _outputs(out) == expected
    rows = _manifest(out / "manifest.csv")
    assert _rows(rows, out) == _rows(_manifest(reference / "manifest.csv"), reference)
    # What the killed run finished was skipped, not redone.
    assert any(r["resumed"] == "yes" for r in rows)
    assert any(r["resumed"] == "" for r in rows)


def test_sigterm_stops_with_its_own_status_and_the_run_resumes(cohort, reference, tmp_path):
    out = tmp_path / "run"
    marker = tmp_path / "mid-method"
    # The 5th method run (case 2, integrated gradients) pauses; SIGTERM arrives during it.
    child = _child("pause-in-method", 5, cohort, out, XAIMED_TEST_MARKER=str(marker))
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == EXIT_INTERRUPTED == 75, stderr
    assert "interrupted" in stderr and "run the same command again" in stderr
    rows = _manifest(out / "manifest.csv")
    by_status = {s: [r for r in rows if r["status"] == s] for s in {r["status"] for r in rows}}
    assert set(by_status) == {"ok", "interrupted"}
    # The method in flight finished cleanly; nothing was started after the signal.
    assert len(by_status["ok"]) == 5
    interrupted = {(r["case_id"], r["method"]) for r in by_status["interrupted"]}
    assert len(interrupted) == 7
    assert all("run the same command again to resume" in r["error"] for r in rows
               if r["status"] == "interrupted")  # fmt: skip
    assert all(r["error_type"] == "Interrupted" for r in by_status["interrupted"])
    assert _temporaries(out) == []

    code, text = _explain(cohort, out)
    assert code == 0, text
    assert _outputs(out) == _outputs(reference)
    resumed = _manifest(out / "manifest.csv")
    assert sum(r["resumed"] == "yes" for r in resumed) == 5


def test_shards_merged_equal_one_unsharded_run(cohort, reference, tmp_path):
    out = tmp_path / "sharded"
    for index in (1, 0):  # any order
        code, text = _explain(cohort, out, "--shard", f"{index}/2")
        assert code == 0, text
    assert not (out / "manifest.csv").exists()
    shards = [_manifest(out / f"manifest-shard-{i}-of-2.csv") for i in (0, 1)]
    assert [len({r["case_id"] for r in s}) for s in shards] == [2, 2]
    code, text = _invoke("merge", out)
    assert code == 0, text
    assert "ok" in text and "slowest cases" in text
    merged = _manifest(out / "manifest.csv")
    assert _rows(merged, out) == _rows(_manifest(reference / "manifest.csv"), reference)
    assert _outputs(out) == _outputs(reference)


def test_slurm_array_variables_choose_the_shard(cohort, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    code, text = _invoke("explain", cohort["cases"], "-c", cohort["config"], "-o",
                         tmp_path / "o", "--dry-run")  # fmt: skip
    assert code == 0, text
    assert "shard 1/3, 1 case(s)" in text and "│ b " in text  # cases a, b, c, study: b
    assert "Slurm job array detected: running shard 1/3" in text
    assert not (tmp_path / "o").exists()  # a dry run writes nothing


def test_dry_run_lists_what_would_run_and_what_is_done(cohort, reference):
    code, text = _invoke("explain", cohort["cases"], "-c", cohort["config"], "-o", reference,
                         "--dry-run", "-m", "saliency", "-m", "grad_cam")  # fmt: skip
    assert code == 0, text
    lines = [line for line in text.splitlines() if line.startswith("│ a ")]
    assert lines and "grad_cam" in lines[0] and "saliency" in lines[0]
    assert "4 case x method to run, 4 done earlier and skipped" in text


def test_changed_config_or_overwrite_redoes_the_work(cohort, reference, tmp_path):
    out = tmp_path / "run"
    assert _explain(cohort, out, "-m", "saliency")[0] == 0
    assert _explain(cohort, out, "-m", "saliency")[0] == 0
    assert {r["resumed"] for r in _manifest(out / "manifest.csv")} == {"yes"}
    assert _explain(cohort, out, "-m", "saliency", "--overwrite")[0] == 0
    assert {r["resumed"] for r in _manifest(out / "manifest.csv")} == {""}
    # Another seed is another config: the record no longer matches.
    config = yaml.safe_load(cohort["config"].read_text())
    config["runtime"]["seed"] = 7
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    code, _ = _invoke("explain", cohort["cases"], "-c", changed, "-o", out, "-q", "-m", "saliency")
    assert code == 0
    assert {r["resumed"] for r in _manifest(out / "manifest.csv")} == {""}
    # A deleted map is redone even though its record exists.
    first = _manifest(out / "manifest.csv")[0]
    Path(first["nifti"]).unlink()
    code, _ = _invoke("explain", cohort["cases"], "-c", changed, "-o", out, "-q", "-m", "saliency")
    rows = _manifest(out / "manifest.csv")
    assert code == 0 and rows[0]["resumed"] == "" and Path(rows[0]["nifti"]).is_file()
    assert [r["resumed"] for r in rows[1:]] == ["yes"] * 3


@pytest.fixture(scope="module")
def bad_list(cohort: dict[str, Path]) -> Path:
    """A case list: the good cases plus a corrupt study, a missing path and a wrong shape."""
    root, cases = cohort["root"], cohort["cases"]
    corrupt = root / "corrupt" / "x.nii.gz"
    corrupt.parent.mkdir()
    good = (cases / "a.nii.gz").read_bytes()
    corrupt.write_bytes(good[: len(good) // 2])  # truncated mid-stream
    flat = write_nifti(root / "flat.nii.gz", np.ones((12, 12, 1, 1, 3)), np.eye(4))
    listing = root / "cases.tsv"
    listing.write_text(
        "case_id\tpath\tlabel\textra\n"
        "a\tcases/a.nii.gz\tlesion\tx\n"
        "broken\tcorrupt/x.nii.gz\t\t\n"
        "gone\tnowhere/missing.nii.gz\t\t\n"
        f"flat\t{flat}\t\t\n"
        "study\tcases/dicom/p1\thealthy\t\n"
        "b\tcases/b.nii.gz\t\t\n"
    )
    return listing


def test_case_list_with_bad_entries_completes_the_others(cohort, bad_list, tmp_path):
    out = tmp_path / "run"
    code, text = _invoke("explain", bad_list, "-c", cohort["config"], "-o", out, "-m",
                         "saliency")  # fmt: skip
    assert code == 1, text
    rows = {r["case_id"]: r for r in _manifest(out / "manifest.csv")}
    assert list(rows) == ["a", "broken", "gone", "flat", "study", "b"]  # the list's order
    assert [rows[c]["status"] for c in ("a", "study", "b")] == ["ok"] * 3
    assert rows["a"]["label"] == "lesion" and rows["study"]["label"] == "healthy"
    assert json.loads(Path(rows["a"]["sidecar"]).read_text())["label"] == "lesion"
    assert rows["study"]["dicom_pm"]
    assert (
        rows["broken"]["status"] == "failed" and "truncated or corrupt" in rows["broken"]["error"]
    )
    assert "x.nii.gz" in rows["broken"]["error"] and rows["broken"]["error_type"] == "InputError"
    assert rows["gone"]["error"].startswith("case gone: ") and "does not exist" in rows["gone"][
        "error"
    ] and "case list" in rows["gone"]["error"]  # fmt: skip
    assert rows["flat"]["status"] == "failed" and rows["flat"]["error_type"] == "InputError"
    assert "flat" in rows["flat"]["error"]
    for case_id in ("broken", "gone", "flat"):
        assert "failed: " in text and rows[case_id]["error"][:40] in text.replace("\n", " ")


def test_fail_fast_stops_at_the_first_failed_case(cohort, bad_list, tmp_path):
    out = tmp_path / "run"
    code, _ = _invoke("explain", bad_list, "-c", cohort["config"], "-o", out, "-m", "saliency",
                      "--fail-fast", "-q")  # fmt: skip
    assert code == 1
    rows = _manifest(out / "manifest.csv")
    assert [r["status"] for r in rows] == ["ok", "failed", "not_run", "not_run", "not_run",
                                           "not_run"]  # fmt: skip
    assert "--fail-fast" in rows[2]["error"]


def test_case_list_problems_are_reported_together(cohort, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("case_id,path\na,x.nii.gz\na,y.nii.gz\nb c,z.nii.gz\n,w.nii.gz\n")
    code, text = _invoke("explain", listing, "-c", cohort["config"], "-o", tmp_path / "o")
    assert code == 2
    flat = " ".join(text.split())
    assert "line 3: case id 'a' repeats line 2" in flat
    assert "line 4: case id 'b c' has characters unsafe in file names" in flat
    assert "line 5: give case_id and one of path or study_uid" in flat
    listing.write_text("id,file\na,x.nii.gz\n")
    code, text = _invoke("explain", listing, "-c", cohort["config"], "-o", tmp_path / "o")
    assert code == 2 and "no column case_id, path" in " ".join(text.split())


def test_json_logs_go_to_one_file_per_run_and_shard(cohort, tmp_path):
    out = tmp_path / "run"
    args = ("-m", "saliency", "--log-format", "json", "--shard", "0/2")
    code, _ = _invoke("explain", cohort["cases"], "-c", cohort["config"], "-o", out, *args)
    assert code == 0
    logs = sorted((out / "logs").iterdir())
    assert len(logs) == 1 and logs[0].name.startswith("explain-shard-0-of-2-")
    records = [json.loads(line) for line in logs[0].read_text().splitlines()]
    assert all({"time", "level", "message", "shard"} <= set(r) for r in records)
    assert any("cases 2/2" in r["message"] for r in records)
    assert {r["shard"] for r in records} == {"0/2"}


def test_two_device_workers_give_the_serial_results(cohort, reference, tmp_path):
    out = tmp_path / "run"
    code, text = _explain(cohort, out, "--devices", "cpu,cpu")
    assert code == 0, text
    assert _outputs(out) == _outputs(reference)
    assert _rows(_manifest(out / "manifest.csv"), out) == _rows(
        _manifest(reference / "manifest.csv"), reference
    )


def test_dask_local_cluster_gives_the_serial_results(cohort, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None, silence_logs=40,
        ) as cluster,
    ):  # fmt: skip
        out = tmp_path / "run"
        code, text = _explain(cohort, out, "--executor", "dask", "--scheduler",
                              cluster.scheduler_address)  # fmt: skip
    assert code == 0, text
    assert _outputs(out) == _outputs(reference)
    assert _rows(_manifest(out / "manifest.csv"), out) == _rows(
        _manifest(reference / "manifest.csv"), reference
    )


def test_dask_needs_a_reachable_scheduler(cohort, tmp_path):
    code, text = _explain(cohort, tmp_path / "o", "--executor", "dask")
    assert code == 2 and "--executor dask needs --scheduler" in text


def test_shard_option_and_slurm_variables_are_checked():
    from xaimed.errors import XaimedError
    from xaimed.run.shard import Shard, parse_shard, shard_from_environment

    assert parse_shard(" 2 / 5 ") == Shard(2, 5)
    assert Shard(1, 3).select(list("abcdefg")) == ["b", "e"]
    for bad in ("5/5", "1", "-1/3", "a/b", "0/0"):
        with pytest.raises(XaimedError, match="expected I/N with 0 <= I < N"):
            parse_shard(bad)
    assert shard_from_environment({}) is None
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert shard_from_environment(env) == Shard(1, 4)
    with pytest.raises(XaimedError, match=r"outside 0\.\.3"):
        shard_from_environment(env | {"SLURM_ARRAY_TASK_ID": "9"})
    with pytest.raises(XaimedError, match="give --shard I/N explicitly"):
        shard_from_environment(env | {"SLURM_ARRAY_TASK_ID": "x"})


def test_merge_reports_missing_shards_and_refuses_mixed_counts(cohort, tmp_path):
    out = tmp_path / "run"
    code, _ = _explain(cohort, out, "-m", "saliency", "--shard", "0/3")
    assert code == 0
    code, text = _invoke("merge", out)
    assert code == 1 and "no manifest for shard 1" in text and "no manifest for shard 2" in text
    # Shard 0 of 3 holds cases 0 and 3 (a and the DICOM study); the merge keeps what exists.
    merged = [r["case_id"] for r in _manifest(out / "manifest.csv")]
    assert merged == [r["case_id"] for r in _manifest(out / "manifest-shard-0-of-3.csv")]
    assert merged[0] == "a" and merged[1].startswith("study-")
    (out / "manifest-shard-0-of-2.csv").write_text("case_id\n")
    code, text = _invoke("merge", out)
    assert code == 2 and "different shard counts [2, 3]" in text
    code, text = _invoke("merge", tmp_path)
    assert code == 2 and "no shard manifests" in text


def test_out_of_memory_fails_only_its_case_after_the_engine_retries(cohort, tiny_state, tmp_path):
    config = yaml.safe_load(cohort["config"].read_text())
    config["model"]["architecture"] = "tiny_models:MemoryBound"
    config["methods"] = [{"name": "occlusion", "params": {"window": 6, "stride": 6}}]
    path = tmp_path / "bound.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    code, text = _invoke("explain", cohort["cases"], "-c", path, "-o", out, "-q")
    assert code == 1, text
    rows = {r["case_id"]: r for r in _manifest(out / "manifest.csv")}
    # c is 18^3 = 5832 voxels, above the bound even alone; the others fit one at a time.
    assert rows["c"]["status"] == "failed" and rows["c"]["error_type"] == "OutOfMemoryError"
    assert (
        rows["c"]["error"].startswith("case c: out of memory") and "crop_pad" in rows["c"]["error"]
    )
    ok = [r for r in rows.values() if r["case_id"] != "c"]
    assert len(ok) == 3 and all(r["status"] == "ok" for r in ok)
    details = json.loads(Path(rows["a"]["sidecar"]).read_text())["method_details"]
    assert details["out_of_memory_backoffs"] == 2 and details["batch_size"] == 1


def _wait_for_ok_row(out: Path, child: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    manifest = out / "manifest.csv"
    while True:
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        if manifest.exists() and any(r["status"] == "ok" for r in _manifest(manifest)):
            return
        time.sleep(0.1)


def _group_alive(pgid: int, within: float = 30) -> bool:
    """Whether any process of the group is still there after ``within`` seconds.

    Workers and multiprocessing's resource tracker exit shortly after their parent does.
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.2)
    return True


def _device_child(cohort: dict[str, Path], out: Path) -> subprocess.Popen:
    args = ["explain", str(cohort["cases"]), "-c", str(cohort["config"]), "-o", str(out), "-q",
            "--devices", "cpu,cpu"]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, str(DRIVER), "none", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a batch job has
    )


def test_sigterm_to_the_whole_group_stops_device_workers_cleanly(cohort, reference, tmp_path):
    out = tmp_path / "run"
    child = _device_child(cohort, out)
    _wait_for_ok_row(out, child)
    os.killpg(child.pid, signal.SIGTERM)  # what scancel and pre-emption do
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == EXIT_INTERRUPTED, stderr
    rows = _manifest(out / "manifest.csv")
    assert {r["status"] for r in rows} <= {"ok", "interrupted"}, rows
    assert not any(r["error_type"] == "WorkerDied" for r in rows)
    assert not _group_alive(child.pid)
    code, text = _explain(cohort, out)
    assert code == 0, text
    assert _outputs(out) == _outputs(reference)


def test_device_workers_exit_when_the_parent_is_killed(cohort, reference, tmp_path):
    out = tmp_path / "run"
    child = _device_child(cohort, out)
    _wait_for_ok_row(out, child)
    child.kill()  # the parent only
    child.communicate(timeout=30)
    assert not _group_alive(child.pid, within=60), "device workers outlived their parent"
    assert "pending" in {r["status"] for r in _manifest(out / "manifest.csv")}
    code, text = _explain(cohort, out)
    assert code == 0, text
    assert _outputs(out) == _outputs(reference)


def test_merge_orders_by_case_index_and_reports_a_killed_shard(cohort, reference, tmp_path):
    out = tmp_path / "run"
    args = ["explain", str(cohort["cases"]), "-c", str(cohort["config"]), "-o", str(out), "-q",
            "--shard", "0/2"]  # fmt: skip
    killed = subprocess.run(
        [sys.executable, str(DRIVER), "kill-between-cases", "1", *args], capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL
    assert _explain(cohort, out, "--shard", "1/2")[0] == 0
    code, text = _invoke("merge", out)
    assert code == 1 and "pending" in text
    merged = _manifest(out / "manifest.csv")
    assert [r["case_index"] for r in merged] == sorted(r["case_index"] for r in merged)
    assert {r["status"] for r in merged if r["case_index"] == 2} == {"pending"}
    assert _explain(cohort, out, "--shard", "0/2")[0] == 0
    assert _invoke("merge", out)[0] == 0
    assert _rows(_manifest(out / "manifest.csv"), out) == _rows(
        _manifest(reference / "manifest.csv"), reference
    )


def test_a_changed_case_list_entry_is_redone(cohort, tmp_path):
    listing = tmp_path / "cases.csv"
    listing.write_text(f"case_id,path,label\nA,{cohort['cases'] / 'a.nii.gz'},x\n")
    out = tmp_path / "run"
    args = ("-c", cohort["config"], "-o", out, "-q", "-m", "saliency")
    assert _invoke("explain", listing, *args)[0] == 0
    assert _invoke("explain", listing, *args)[0] == 0
    assert _manifest(out / "manifest.csv")[0]["resumed"] == "yes"
    listing.write_text(f"case_id,path,label\nA,{cohort['cases'] / 'b.nii.gz'},y\n")
    assert _invoke("explain", listing, *args)[0] == 0
    row = _manifest(out / "manifest.csv")[0]
    assert row["resumed"] == "" and row["source"].endswith("b.nii.gz") and row["label"] == "y"
