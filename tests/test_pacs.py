"""Studies from a real Orthanc (DICOMweb, C-GET, C-MOVE) and maps stored back into them."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import pydicom
import pytest
import yaml
from conftest import ROOT
from dicom_helpers import DATA, write_study
from orthanc_server import PASSWORD, USER, Orthanc
from pydantic import ValidationError
from typer.testing import CliRunner

from xaimed.cli import app
from xaimed.config import load_config
from xaimed.errors import ConfigError
from xaimed.io.dicom import scan_dicom
from xaimed.pacs.settings import PacsSection
from xaimed.pipeline import explain
from xaimed.progress import LogReporter
from xaimed.writers.manifest import read_manifest

runner = CliRunner()


@pytest.fixture
def orthanc(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """A running Orthanc with our credentials in the environment, stopped after the test."""
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    monkeypatch.setenv("XAIMED_PACS_USERNAME", USER)
    monkeypatch.setenv("XAIMED_PACS_PASSWORD", PASSWORD)
    yield server
    server.stop()


def _explain(input_path: str | Path, config: Path, out: Path, *extra: str):
    args = ["explain", str(input_path), "-c", str(config), "-o", str(out), *extra]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    rows = []
    if (out / "manifest.csv").exists():
        rows = read_manifest(out / "manifest.csv")
    return result, rows


def _digest(path: Path) -> str:
    if path.is_dir():
        return "".join(_digest(p) for p in sorted(path.iterdir()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def studies(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Two generated studies (MR, CT with rescale) and a real scanner series, as a folder;
    returns it and the Study Instance UID of each case id."""
    folder = tmp_path / "export"
    write_study(folder / "a", seed="pacs-a", shape=(14, 12, 8))
    write_study(folder / "b", seed="pacs-b", shape=(12, 12, 6), axcodes="RAS", modality="CT",
                rescale=(1.0, -1024.0))  # fmt: skip
    shutil.copytree(DATA / "hitachi" / "001", folder / "vendor")
    return folder, {s.case_id: s.study_uid for s in scan_dicom(folder)}


def _upload(orthanc, folder: Path) -> None:
    orthanc.upload(sorted(p for p in folder.rglob("*") if p.is_file()))


def _outputs(row: dict[str, str]) -> dict[str, str]:
    return {k: _digest(Path(row[k])) for k in ("nifti", "png", "dicom_pm", "dicom_sc")}


def test_dicomweb_cget_and_cmove_give_the_folders_outputs(tmp_path, orthanc, studies, make_config):
    folder, uids = studies
    _upload(orthanc, folder)
    base = {"methods": ["saliency"], "outputs": {"png": True}}
    result, local = _explain(folder, make_config(**base), tmp_path / "folder", "-q")
    assert result.exit_code == 0, result.output
    expected = {r["case_id"]: _outputs(r) for r in local}
    assert len(expected) == 3

    # DICOMweb from a case list with a study_uid column; C-GET and C-MOVE from the query.
    case_list = tmp_path / "cases.csv"
    case_list.write_text(
        "case_id,study_uid\n" + "".join(f"{cid},{uid}\n" for cid, uid in sorted(uids.items()))
    )
    runs = [("dicomweb", case_list, orthanc.dicomweb()), ("get", "pacs:", orthanc.dimse("get")),
            ("move", "pacs:", orthanc.dimse("move"))]  # fmt: skip
    for name, source, server in runs:
        config = make_config(**base, pacs={"server": server})
        result, rows = _explain(source, config, tmp_path / name, "-q")
        assert result.exit_code == 0, (name, result.output)
        assert {r["case_id"]: _outputs(r) for r in rows} == expected, name
        for row in rows:
            assert row["source"].endswith(f"/studies/{uids[row['case_id']]}")
        # The cache is emptied case by case unless told to keep studies.
        cache = tmp_path / name / ".pacs-cache"
        assert not [p for p in cache.iterdir() if not p.name.startswith(".")]


def _series_of(orthanc, study_uid: str) -> dict[str, str]:
    """Series Instance UID -> Modality of a study, through Orthanc's DICOMweb QIDO."""
    found = orthanc.rest("get", f"/dicom-web/studies/{study_uid}/series").json()
    return {s["0020000E"]["Value"][0]: s["00080060"]["Value"][0] for s in found}


def test_store_puts_the_maps_into_the_source_study_once(
    tmp_path, orthanc, studies, make_config, caplog
):
    folder, uids = studies
    _upload(orthanc, folder)
    before = orthanc.count()
    config = make_config(
        methods=["saliency"], pacs={"server": orthanc.dicomweb()},
        outputs={"png": False, "store": {"server": "source"}},
    )  # fmt: skip
    result, rows = _explain("pacs:", config, tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    written = [Path(r["dicom_pm"]) for r in rows]
    written += [p for r in rows for p in sorted(Path(r["dicom_sc"]).glob("*.dcm"))]
    assert [r["stored"] for r in rows] == ["yes"] * 3
    assert orthanc.count() - before == len(written)
    for row in rows:
        pm = pydicom.dcmread(row["dicom_pm"])
        series = _series_of(orthanc, uids[row["case_id"]])
        assert pm.SeriesInstanceUID in series
        sc_uid = pydicom.dcmread(next(Path(row["dicom_sc"]).glob("*.dcm"))).SeriesInstanceUID
        assert series[sc_uid] == "OT" or sc_uid in series
        # What the server holds is what was written.
        back = orthanc.rest(
            "get",
            f"/dicom-web/studies/{pm.StudyInstanceUID}/series/{pm.SeriesInstanceUID}"
            f"/instances/{pm.SOPInstanceUID}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert back.ok and pm.FloatPixelData in back.content

    # Redone from scratch, through DICOMweb and then DIMSE: nothing is sent twice.
    for store in ("source", orthanc.dimse()):
        config = make_config(
            methods=["saliency"], pacs={"server": orthanc.dicomweb()},
            outputs={"png": False, "store": {"server": store}},
        )  # fmt: skip
        with caplog.at_level(logging.INFO, logger="xaimed"):
            caplog.clear()
            result, rows = _explain("pacs:", config, tmp_path / "out", "--overwrite")
        assert result.exit_code == 0, result.output
        assert orthanc.count() - before == len(written)
        assert [r["stored"] for r in rows] == ["yes"] * 3
        assert "0 instance(s) stored" in caplog.text and " 1 instance(s) stored" not in caplog.text


class _StopServerAfterFirstCase(LogReporter):
    def __init__(self, orthanc) -> None:
        super().__init__()
        self.orthanc = orthanc

    def case_done(self, line: str) -> None:
        super().case_done(line)
        self.orthanc.stop()


def test_server_stopped_mid_run_fails_those_cases_and_the_rerun_completes(
    tmp_path,
    orthanc,
    studies,
    make_config,
):
    folder, _ = studies
    _upload(orthanc, folder)
    before, series_before = orthanc.count(), orthanc.count("series")
    config = load_config(
        make_config(
            methods=["saliency"], pacs={"server": orthanc.dicomweb()},
            outputs={"png": False, "store": {"server": "source"}},
        )
    )  # fmt: skip
    result = explain("pacs:", config, tmp_path / "out", reporter=_StopServerAfterFirstCase(orthanc))
    statuses = [r["status"] for r in result.rows]
    assert statuses[0] == "ok" and statuses[1:] == ["failed", "failed"], result.rows
    for row in result.rows[1:]:
        message = row["error"]
        # One sentence naming the case and the server, saying what happens next.
        assert message.count(". ") == 0 and message.endswith(".")
        assert row["case_id"] in message and orthanc.url in message and "next run" in message

    orthanc.start()
    result = explain("pacs:", config, tmp_path / "out")
    assert [r["status"] for r in result.rows] == ["ok"] * 3
    assert [r.get("resumed", "") for r in result.rows] == ["yes", "", ""]
    # Every derived series once: one Parametric Map and one Secondary Capture series per case.
    assert orthanc.count("series") == series_before + 6
    stored = sum(1 + len(list(Path(r["dicom_sc"]).glob("*.dcm"))) for r in result.rows)
    assert orthanc.count() == before + stored


def test_wrong_credentials_stop_the_run_before_any_case(
    tmp_path, orthanc, studies, make_config, monkeypatch
):
    folder, _ = studies
    _upload(orthanc, folder)
    config = make_config(methods=["saliency"], pacs={"server": orthanc.dicomweb()})
    monkeypatch.setenv("XAIMED_PACS_PASSWORD", "wrong")
    result, rows = _explain("pacs:", config, tmp_path / "out")
    assert result.exit_code == 2, result.output
    error = " ".join(result.output.split())
    assert "refused our credentials (HTTP 401)" in error and PASSWORD not in error
    assert rows == [] and not list((tmp_path / "out").glob("study-*"))

    # The same from a credentials file, with nothing in the environment.
    monkeypatch.delenv("XAIMED_PACS_USERNAME")
    monkeypatch.delenv("XAIMED_PACS_PASSWORD")
    secret = tmp_path / "pacs.yaml"
    secret.write_text(yaml.safe_dump({"username": USER, "password": PASSWORD}))
    server = orthanc.dicomweb(credentials={"auth": "basic", "file": str(secret)})
    config = make_config(methods=["saliency"], pacs={"server": server})
    result, _ = _explain("pacs:", config, tmp_path / "out", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.count("study-") == 3


def test_query_and_cache(tmp_path, orthanc, make_config, caplog):
    sample = ROOT / "sample_data" / "dicom"  # case03 (MR, RLE) and case04 (CT)
    _upload(orthanc, sample)
    ct = next(s for s in scan_dicom(sample) if s.series[0].modality == "CT")
    cache = tmp_path / "cache"
    pacs = {"server": orthanc.dicomweb(), "query": {"modality": "CT"},
            "cache": {"folder": str(cache), "keep": True}}  # fmt: skip
    config = make_config(methods=["saliency"], pacs=pacs)
    result, _ = _explain("pacs:", config, tmp_path / "out", "--dry-run")
    assert result.exit_code == 0, result.output
    assert ct.case_id in result.output and result.output.count("study-") == 1

    result, rows = _explain("pacs:", config, tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    assert [r["case_id"] for r in rows] == [ct.case_id]
    (kept,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    marker = (kept / ".complete").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="xaimed"):
        result, _ = _explain("pacs:", config, tmp_path / "out", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (kept / ".complete").stat().st_mtime_ns == marker  # not fetched again
    assert "found in the cache" in caplog.text


def test_pacs_settings_and_case_lists_are_checked_before_anything_runs(tmp_path, make_config):
    with pytest.raises(ValidationError, match="protocol dicomweb takes `url`"):
        PacsSection.model_validate({"server": {"protocol": "dicomweb", "url": "http://x",
                                               "host": "x"}})  # fmt: skip
    with pytest.raises(ValidationError, match="retrieve: move needs `move_port`"):
        PacsSection.model_validate({"server": {"protocol": "dimse", "host": "h", "port": 104,
                                               "called_aet": "A", "retrieve": "move"}})  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_config(make_config(outputs={"store": {"server": "source"}}))
    assert "outputs.store.server is 'source' but there is no pacs section" in str(
        info.value.problems
    )

    cases = tmp_path / "cases.csv"
    cases.write_text("case_id,study_uid\nx,1.2.3\ny,not-a-uid\n")
    result, _ = _explain(cases, make_config(), tmp_path / "out")
    assert result.exit_code == 2
    assert "line 3: study_uid 'not-a-uid' is not a DICOM UID" in " ".join(result.output.split())
    cases.write_text("case_id,study_uid\nx,1.2.3\n")
    result, _ = _explain(cases, make_config(), tmp_path / "out")
    assert result.exit_code == 2
    assert "name a study_uid but the config has no pacs section" in " ".join(result.output.split())
