"""The Metric protocol: one table of kinds (settings, metrics.csv columns, module), from which the
evaluate section, the accepted kinds and the runner's calls all follow."""

from __future__ import annotations

import csv
import importlib
from pathlib import Path

import numpy as np
import pytest
from conftest import blob_volume, oblique_affine, write_nifti
from pydantic import ValidationError

from xaimed.errors import ConfigError
from xaimed.evaluate import evaluate
from xaimed.evaluate.settings import METRICS, EvaluateSection
from xaimed.pipeline import explain
from xaimed.progress import LogReporter


def test_every_registered_kind_has_its_section_and_a_compute():
    section = EvaluateSection()
    assert section.metrics == list(METRICS)
    for kind, entry in METRICS.items():
        assert isinstance(section.of(kind), entry.settings)
        assert callable(importlib.import_module(entry.module).compute)
        assert len(set(entry.columns)) == len(entry.columns)
    every = [c for entry in METRICS.values() for c in entry.columns]
    assert len(set(every)) == len(every), "a metrics.csv name belongs to one kind"
    with pytest.raises(ValidationError, match="faithfulness"):
        EvaluateSection.model_validate({"metrics": ["faithfulnes"]})
    with pytest.raises(ValidationError):
        EvaluateSection.model_validate({"sparseness": {}})  # not registered: no such section


@pytest.fixture
def run(tmp_path: Path, make_config) -> Path:
    affine = oblique_affine((2.0, 2.0, 2.0), "RAS")
    write_nifti(tmp_path / "images" / "a.nii.gz", blob_volume(seed=1), affine)
    mask = np.zeros((20, 18, 14))
    mask[8:13, 7:12, 5:10] = 1
    write_nifti(tmp_path / "masks" / "a.nii.gz", mask, affine, dtype=np.uint8)
    config = make_config(
        methods=[{"name": "saliency"}, {"name": "input_x_gradient"}],
        evaluate={
            "masks": str(tmp_path / "masks" / "{case_id}.nii.gz"),
            "faithfulness": {"steps": 4},
            "sanity": {"methods": ["saliency"]},
            "robustness": {"samples": 1, "methods": ["saliency"]},
        },
    )
    explain(tmp_path / "images", config, tmp_path / "run", reporter=LogReporter())
    return tmp_path / "run"


def test_each_kind_writes_exactly_its_registered_columns(run, tmp_path):
    result = evaluate(run, out_dir=tmp_path / "eval")
    assert result.failures == []
    with (tmp_path / "eval" / "metrics.csv").open(newline="") as fh:
        written = {row["metric"] for row in csv.DictReader(fh)}
    # Without a shuffled-label model or checkpoints those rows are absent; all else is written.
    optional = {"data_randomisation_spearman", "data_randomisation_ssim",
                "data_randomisation_verdict", "checkpoint_agreement_spearman"}  # fmt: skip
    registered = {c for entry in METRICS.values() for c in entry.columns}
    assert written == registered - optional
    assert set(result.summary["cost"]) == set(METRICS)


def test_an_unknown_kind_on_the_command_line_names_the_registered_ones(run):
    with pytest.raises(ConfigError, match="localisation, faithfulness, sanity"):
        evaluate(run, metrics=["sparseness"])
