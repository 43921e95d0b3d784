"""Multi-sequence cases (one file per channel) and 4D files with channels: per-channel maps,
their shares, grid checks and resampling onto one channel's grid."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import TESTS, blob_volume, tiny_config, write_nifti
from tiny_models import TinyCNN
from typer.testing import CliRunner

from xaimed.cli import app
from xaimed.config import PreprocessingSection, load_config
from xaimed.errors import ConfigError, InputError
from xaimed.io.case import Case, ChannelFile
from xaimed.io.cases import discover_cases
from xaimed.io.read import read_case
from xaimed.preprocess import prepare
from xaimed.volume import Source, Volume
from xaimed.writers.manifest import read_manifest

REPO = TESTS.parent
SAMPLE = REPO / "sample_data" / "multisequence"
SEQUENCES = ("t1", "t1ce", "t2", "flair")
runner = CliRunner()


def _explain(cases: Path, config: Path, out: Path) -> None:
    result = runner.invoke(app, ["explain", str(cases), "-c", str(config), "-o", str(out), "-q"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception


def _rows(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["case_id"], r["method"]): r for r in read_manifest(out / "manifest.csv")}


def _sample_config(root: Path, **changes) -> Path:
    """configs/multisequence.yaml, small: two gradient methods, no PNG or report."""
    config = yaml.safe_load((REPO / "configs" / "multisequence.yaml").read_text())
    config["model"]["weights"] = str(REPO / "xaimed" / "sample" / "multiseq_cnn_state.pt")
    config["methods"] = ["saliency", {"name": "integrated_gradients", "params": {"steps": 8}}]
    config["outputs"] = {"png": False, "report": False}
    config["runtime"] = {"device": "cpu", "threads": 1}
    config.update(changes)
    path = root / f"config{len(list(root.glob('config*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def sample_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two sample cases: case07's sequences share one grid, case08's T2 and FLAIR do not."""
    root = tmp_path_factory.mktemp("multisequence")
    for path in SAMPLE.glob("*.nii.gz"):
        shutil.copy(path, root / path.name)
    shutil.copy(SAMPLE / "cases.csv", root / "cases.csv")
    return root


@pytest.fixture(scope="module")
def sample_run(sample_cases: Path) -> Path:
    """The sample config as shipped (resample_to: t1), on both sample cases."""
    _explain(sample_cases / "cases.csv", _sample_config(sample_cases), sample_cases / "run")
    return sample_cases / "run"


def test_channel_maps_add_up_to_the_combined_map_exactly(sample_run: Path) -> None:
    row = _rows(sample_run)[("case07", "saliency")]
    combined = nib.load(row["nifti"])
    parts = [
        np.asarray(nib.load(sample_run / "case07" / f"case07_saliency_{name}.nii.gz").dataobj)
        for name in SEQUENCES
    ]
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    assert np.array_equal(total, np.asarray(combined.dataobj))
    assert all(np.abs(p).sum() > 0 for p in parts[1:])
    assert combined.shape == (32, 32, 32)  # the source grid, without the channel axis
    assert np.allclose(combined.affine, nib.load(SAMPLE / "case07_t1.nii.gz").affine)


def test_shares_in_sidecar_and_manifest_sum_to_one_and_say_which_sequence_mattered(
    sample_run: Path,
) -> None:
    row = _rows(sample_run)[("case07", "integrated_gradients")]
    shares = json.loads(row["channel_shares"])
    assert list(shares) == list(SEQUENCES)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)
    # The lesion does not show on T1: a gradient method finds it in T1ce and FLAIR.
    assert shares["t1ce"] > shares["t1"] and shares["flair"] > shares["t1"]
    assert row["top_channel"] == max(shares, key=shares.__getitem__)
    sidecar = json.loads(Path(row["sidecar"]).read_text())
    assert sidecar["channels"]["shares"] == shares
    assert sidecar["channels"]["maps"]["flair"] == "case07_integrated_gradients_flair.nii.gz"
    files = [c["path"] for c in sidecar["source"]["channels"]]
    assert [Path(f).name for f in files] == [f"case07_{name}.nii.gz" for name in SEQUENCES]
    # The shares are those of the per-channel files.
    sums = {
        name: float(np.abs(nib.load(sample_run / "case07" / file).get_fdata()).sum())
        for name, file in sidecar["channels"]["maps"].items()
    }
    assert shares == pytest.approx({k: v / sum(sums.values()) for k, v in sums.items()}, abs=1e-5)


def test_a_case_whose_sequences_lie_on_two_grids_fails_alone_with_one_sentence(
    sample_cases: Path,
) -> None:
    # The shorthand, without resample_to: case08's T2 is on a grid of its own.
    preprocessing = yaml.safe_load((REPO / "configs" / "multisequence.yaml").read_text())
    preprocessing = {**preprocessing["preprocessing"], "channels": list(SEQUENCES)}
    config = _sample_config(sample_cases, preprocessing=preprocessing, methods=["saliency"])
    _explain(sample_cases / "cases.csv", config, sample_cases / "one-grid")
    rows = _rows(sample_cases / "one-grid")
    assert rows[("case07", "saliency")]["status"] == "ok"
    failed = rows[("case08", "saliency")]
    assert failed["status"] == "failed" and failed["error_type"] == "InputError"
    assert failed["error"] == (
        f"case case08: channel t2 ({sample_cases / 'case08_t2.nii.gz'}) is on another grid "
        "than t1: shape (32, 32, 32) against (38, 38, 30); set "
        "preprocessing.channels.resample_to: t1 or give files on one grid."
    )


def test_the_memory_budget_holds_all_channels_stacked_not_each_alone(tmp_path: Path) -> None:
    # Each of case07's files (32^3 float32, 128 KiB) fits the budget alone; its four channels
    # stacked (512 KiB) do not. A smaller case (16^3 x 4, 64 KiB) runs.
    lines = ["case_id," + ",".join(SEQUENCES)]
    for case, crop in (("case07", slice(None)), ("small", slice(8, 24))):
        names = []
        for name in SEQUENCES:
            source = nib.load(SAMPLE / f"case07_{name}.nii.gz")
            data = np.asarray(source.dataobj, dtype=np.float32)[crop, crop, crop]
            write_nifti(tmp_path / f"{case}_{name}.nii.gz", data, source.affine, dtype=np.float32)
            names.append(f"{case}_{name}.nii.gz")
        lines.append(",".join([case, *names]))
    (tmp_path / "cases.csv").write_text("\n".join(lines) + "\n")
    runtime = {"device": "cpu", "threads": 1, "memory_budget": "300KiB"}
    config = _sample_config(tmp_path, methods=["saliency"], runtime=runtime)
    _explain(tmp_path / "cases.csv", config, tmp_path / "run")
    rows = _rows(tmp_path / "run")
    assert rows[("small", "saliency")]["status"] == "ok"
    failed = rows[("case07", "saliency")]
    assert failed["status"] == "failed" and failed["error_type"] == "InputError"
    assert failed["error"] == (
        "case case07: its 4 channels stacked (32 x 32 x 32 x 4 voxels) need 512.0 KiB as "
        "float32, more than runtime.memory_budget (300.0 KiB); give fewer channels, or a machine "
        "with more memory (or a larger runtime.memory_budget)."
    )


def test_without_a_budget_the_stacked_channels_are_checked_against_free_memory() -> None:
    from xaimed.io.safety import available_memory, check_stacked_size

    free = available_memory()
    if free is None:
        pytest.skip("this system does not report its available memory")
    # 4000^3 float32 voxels per channel: 238 GiB, held already; four stacked need 954 GiB.
    with pytest.raises(InputError, match=r"its 4 channels stacked .* more than the memory avail"):
        check_stacked_size((4000, 4000, 4000, 4), "case c", None, held=4000**3 * 4)
    check_stacked_size((16, 16, 16, 4), "case c", None, held=16**3 * 4)  # small: no refusal


def test_the_sample_config_resamples_t2_and_flair_onto_t1(sample_run: Path) -> None:
    row = _rows(sample_run)[("case08", "saliency")]
    assert row["status"] == "ok"
    source = json.loads(Path(row["sidecar"]).read_text())["source"]
    assert source["shape"] == [32, 32, 32, 4]
    resampled = {c["name"]: c["resampled_from"] for c in source["channels"]}
    assert resampled == {"t1": None, "t1ce": None,
                         "t2": "shape (38, 38, 30), spacing (5, 5, 6.5) mm, RAS",
                         "flair": "shape (38, 38, 30), spacing (5, 5, 6.5) mm, RAS"}  # fmt: skip


def test_resample_to_puts_every_channel_on_the_reference_grid(tmp_path: Path) -> None:
    # A linear ramp (world x in mm) on a coarser, shifted grid: linear interpolation of a linear
    # function is exact, so the resampled channel equals world x at the reference voxels.
    ref_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    other_affine = np.diag([3.0, 2.5, 4.0, 1.0])
    other_affine[:3, 3] = [-1.5, -2.0, -4.0]
    ref = write_nifti(tmp_path / "a.nii.gz", blob_volume((10, 10, 8)), ref_affine)
    i = np.arange(12)[:, None, None] * np.ones((12, 12, 8))
    ramp = write_nifti(tmp_path / "b.nii.gz", other_affine[0, 0] * i + other_affine[0, 3],
                       other_affine, dtype=np.float32)  # fmt: skip
    config_data = tiny_config(tmp_path / "w.pt", preprocessing={
        "channels": {"names": ["a", "b"], "resample_to": "a"}}, model={
        "torchscript": str(tmp_path / "m.pt"), "in_channels": 2})  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_data))
    config = load_config(path, check_files=False)
    case = Case("c1", ref, format=None, channels=(ChannelFile("a", ref), ChannelFile("b", ramp)))
    volume = read_case(case, config)
    assert volume.array.shape == (10, 10, 8, 2)
    assert np.array_equal(volume.affine, ref_affine)
    world_x = 2.0 * np.arange(10)[:, None, None] * np.ones((10, 10, 8))
    # Inside the ramp's field of view (x up to 31.5 mm, y up to 25.5, z up to 40).
    assert np.allclose(volume.array[:, :, :, 1], world_x, atol=1e-4)
    assert volume.meta["channels"][1]["resampled_from"].startswith("shape (12, 12, 8)")


def test_four_d_files_get_a_map_and_a_share_per_channel(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = tmp_path / "tiny2.pt"
    torch.save(TinyCNN(in_channels=2).state_dict(), state)
    data = np.stack([blob_volume((12, 12, 10)), blob_volume((12, 12, 10), (4, 4, 4), 1)], -1)
    write_nifti(tmp_path / "in" / "two.nii.gz", data, np.diag([2.0, 2.0, 2.0, 1.0]))
    config = tiny_config(state, preprocessing={"channels": {"source": "last_axis"},
                                               "intensity": {"kind": "zscore"}})  # fmt: skip
    config["model"].update(kwargs={"in_channels": 2}, in_channels=2)
    config["outputs"] = {"png": False, "report": False}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    _explain(tmp_path / "in", path, tmp_path / "run")
    row = _rows(tmp_path / "run")[("two", "saliency")]
    assert row["status"] == "ok"
    parts = [nib.load(tmp_path / "run" / "two" / f"two_saliency_ch{i}.nii.gz") for i in (0, 1)]
    assert np.array_equal(
        np.asarray(parts[0].dataobj) + np.asarray(parts[1].dataobj),
        np.asarray(nib.load(row["nifti"]).dataobj),
    )
    shares = json.loads(row["channel_shares"])
    assert list(shares) == ["ch0", "ch1"] and sum(shares.values()) == pytest.approx(1, abs=1e-5)


def test_channels_without_a_case_list_say_discovery_finds_one_file_per_case(tmp_path):
    write_nifti(tmp_path / "a.nii.gz", blob_volume((6, 6, 6)), np.eye(4))
    with pytest.raises(InputError) as info:
        discover_cases(tmp_path, channels=("t1", "flair"))
    assert str(info.value) == (
        f"{tmp_path}: preprocessing.channels names case-list columns (t1, flair) but INPUT is "
        "not a case list; folder and file discovery find one image file per case, so give a "
        "CSV/TSV case list with those columns."
    )


def test_a_case_list_without_a_channel_column_is_refused_naming_it(tmp_path):
    (tmp_path / "cases.csv").write_text("case_id,t1,flair\nc1,a.nii.gz,b.nii.gz\n")
    with pytest.raises(InputError, match=r"no column t1ce in the header"):
        discover_cases(tmp_path / "cases.csv", channels=("t1", "t1ce", "flair"))
    (case,) = discover_cases(tmp_path / "cases.csv", channels=("T1", "flair"))
    assert case.channels == (ChannelFile("T1", tmp_path / "a.nii.gz"),
                             ChannelFile("flair", tmp_path / "b.nii.gz"))  # fmt: skip


@pytest.mark.parametrize(
    ("channels", "in_channels", "problem"),
    [
        ({"names": ["t1", "t2"], "resample_to": "flair"}, 2,
         "resample_to 'flair' is not one of the channel names ['t1', 't2']"),
        ({"source": "single", "names": ["t1"]}, 1, "`names` needs source 'columns'"),
        (["t1", "path"], 2, "channel name(s) ['path'] are case-list columns of their own"),
        (["t1", "member_std"], 2, "channel name(s) ['member_std'] would give per-channel maps"),
        (["t1", "T1"], 2, "channel name(s) ['T1', 't1'] appear twice"),
        (["t1", "t 2"], 2, "may hold letters, digits, '_' and '-' only, got ['t 2']"),
        (["t1", "t2"], 3, "names 2 channel(s) (x repeat 1) but model.in_channels is 3"),
    ],
)  # fmt: skip
def test_channel_settings_are_checked_at_load(tmp_path, channels, in_channels, problem):
    config = {"model": {"torchscript": "m.pt", "in_channels": in_channels},
              "methods": ["saliency"], "preprocessing": {"channels": channels}}  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as info:
        load_config(path, check_files=False)
    assert any(problem in p for p in info.value.problems), info.value.problems


def test_evaluate_reopens_a_multi_sequence_case_from_its_sidecar(sample_run: Path) -> None:
    # Faithfulness re-explains the case: it must read all four files again, in order (a case
    # read from the manifest's source alone would have one channel, which the model refuses).
    path = _sample_config(sample_run.parent, evaluate={"faithfulness": {"steps": 4}})
    out = sample_run.parent / "evaluated"
    result = runner.invoke(app, ["evaluate", str(sample_run), "-c", str(path), "-o", str(out),
                                 "-m", "faithfulness", "-q"])  # fmt: skip
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    with (out / "metrics.csv").open() as fh:
        rows = [line.split(",") for line in fh.read().splitlines()[1:]]
    values = {(r[0], r[1], r[3]): float(r[4]) for r in rows if r[4]}
    assert 0.0 <= values[("case07", "saliency", "deletion_auc")] <= 1.0
    assert 0.0 <= values[("case07", "integrated_gradients", "insertion_auc")] <= 1.0


@pytest.mark.parametrize("reduce_map", ["sum", "mean"])
def test_the_parts_add_up_to_the_map_with_either_reduction_and_repeats(reduce_map: str) -> None:
    rng = np.random.default_rng(0)
    volume = Volume(rng.normal(size=(5, 4, 3, 3)).astype(np.float32), np.eye(4),
                    Source(Path("x.nii.gz"), "nifti"))  # fmt: skip
    section = PreprocessingSection.model_validate({"channels": {
        "source": "last_axis", "names": ["pet", "ct", "mr"], "repeat": 2,
        "reduce_map": reduce_map}})  # fmt: skip
    prepared = prepare(volume, section)
    model_map = rng.normal(size=(6, 5, 4, 3)).astype(np.float32)
    combined, parts = prepared.invert_map_parts(model_map)
    assert list(parts) == ["pet", "ct", "mr"]
    assert np.array_equal(parts["pet"] + parts["ct"] + parts["mr"], combined.array)
    # Repeated copies of one channel add up (chain rule); mean divides by the channel count.
    pet = model_map[0] + model_map[1]
    assert np.allclose(parts["pet"], pet / (3 if reduce_map == "mean" else 1), atol=1e-6)
    # A spatial map (one channel, as CAMs give) has no parts.
    assert prepared.invert_map_parts(model_map[:1])[1] == {}


def test_a_four_d_file_with_other_than_the_named_channel_count_is_refused() -> None:
    volume = Volume(np.zeros((4, 4, 4, 2), np.float32), np.eye(4),
                    Source(Path("pet_ct.nii.gz"), "nifti"))  # fmt: skip
    section = PreprocessingSection.model_validate(
        {"channels": {"source": "last_axis", "names": ["pet", "ct", "mr"]}}
    )
    with pytest.raises(InputError) as info:
        prepare(volume, section)
    assert str(info.value) == (
        "pet_ct.nii.gz: the 4th axis holds 2 channel(s) but preprocessing.channels.names gives "
        "3; name each channel."
    )


def test_resume_skips_a_multi_sequence_case_until_one_of_its_files_changes(
    sample_run: Path,
) -> None:
    root = sample_run.parent
    config = sorted(root.glob("config*.yaml"))[0]  # the sample_run fixture's
    _explain(root / "cases.csv", config, sample_run)
    assert {r["resumed"] for r in _rows(sample_run).values()} == {"yes"}
    flair = root / "case07_flair.nii.gz"
    stat = flair.stat()
    os.utime(flair, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # FLAIR re-exported
    _explain(root / "cases.csv", config, sample_run)
    resumed = {key: r["resumed"] for key, r in _rows(sample_run).items()}
    assert resumed[("case07", "saliency")] != "yes" and resumed[("case08", "saliency")] == "yes"


def test_resume_redoes_a_method_whose_per_channel_map_was_deleted(sample_run: Path) -> None:
    root = sample_run.parent
    config = sorted(root.glob("config*.yaml"))[0]  # the sample_run fixture's
    _explain(root / "cases.csv", config, sample_run)  # everything current and recorded
    part = sample_run / "case07" / "case07_integrated_gradients_t2.nii.gz"
    before = np.asarray(nib.load(part).dataobj)
    part.unlink()
    _explain(root / "cases.csv", config, sample_run)
    resumed = {key: r["resumed"] for key, r in _rows(sample_run).items()}
    # Only the method that lost a file is redone; its map is written again, as it was.
    assert resumed.pop(("case07", "integrated_gradients")) != "yes"
    assert set(resumed.values()) == {"yes"}
    assert np.array_equal(np.asarray(nib.load(part).dataobj), before)
    # The record now lists the rewritten file: a third run skips everything.
    _explain(root / "cases.csv", config, sample_run)
    assert {r["resumed"] for r in _rows(sample_run).values()} == {"yes"}


def test_the_report_shows_each_channels_part_of_the_map(sample_run: Path, tmp_path: Path) -> None:
    from test_report import read_script, read_volume

    from xaimed.report import build_report

    build_report(sample_run, tmp_path / "report")
    record = read_script(tmp_path / "report" / "data" / "cases" / "case07" / "case.js")
    row = _rows(sample_run)[("case07", "saliency")]
    saliency = next(m for m in record["maps"] if m["key"] == "saliency")
    parts = saliency["channels"]
    assert [p["name"] for p in parts] == list(SEQUENCES)
    assert [p["key"] for p in parts] == [f"saliency/{name}" for name in SEQUENCES]
    assert [p["file"] for p in parts] == [f"case07/case07_saliency_{n}.nii.gz" for n in SEQUENCES]
    assert {p["name"]: p["share"] for p in parts} == pytest.approx(
        json.loads(row["channel_shares"]), abs=1e-5
    )
    largest = 0.0
    for part in parts:
        values = nib.load(sample_run / part["file"]).get_fdata()
        largest = max(largest, float(np.abs(values).max()))
        shown = read_volume(tmp_path / "report" / part["volume"]["file"])
        np.testing.assert_allclose(shown.get_fdata(), values, atol=part["volume"]["step"] / 2)
    # One colour scale for the parts of a map: the largest magnitude over them.
    assert [p["scale"] for p in parts] == pytest.approx([largest] * len(parts), rel=1e-4)
