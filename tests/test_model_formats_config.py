"""Config validation of the model formats: refused at load, one sentence naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from xaimed.config import load_config
from xaimed.errors import ConfigError


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder.mkdir()
    labels = {"background": 0, "liver": 1, "tumour": 2}
    (folder / "dataset.json").write_text(json.dumps({"labels": labels}))
    return folder


def _problems(tmp_path: Path, config: dict) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"methods": [{"name": "saliency"}], **config}))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_nnunet_target_must_be_a_label_of_dataset_json(tmp_path):
    folder = _folder(tmp_path)
    problems = _problems(
        tmp_path, {"model": {"nnunet": {"folder": str(folder)}}, "target": {"class": "spleen"}}
    )
    assert any("'spleen' is not a label" in p and "liver" in p for p in problems)
    path = tmp_path / "ok.yaml"
    model = {"nnunet": {"folder": str(folder), "folds": "all"}}
    path.write_text(yaml.safe_dump({"model": model, "target": {"class": "tumour"},
                                    "methods": [{"name": "saliency"}]}))  # fmt: skip
    assert load_config(path).model.nnunet.fold_names() == ["fold_all"]


@pytest.mark.parametrize("section", [{"preprocessing": {"reorient": "RAS"}},
                                     {"tiling": {"patch_size": [8, 8, 8]}}])  # fmt: skip
def test_own_preprocessing_formats_refuse_preprocessing_and_tiling(tmp_path, section):
    folder = _folder(tmp_path)
    for model in ({"nnunet": {"folder": str(folder)}}, {"monai_bundle": str(folder)}):
        problems = _problems(tmp_path, {"model": model, **section})
        assert any("brings its own preprocessing" in p for p in problems), problems


def test_one_model_source_and_distinct_folds(tmp_path):
    folder = _folder(tmp_path)
    (tmp_path / "m.ts").write_bytes(b"")  # exists, so the one-source rule is what is reported
    problems = _problems(
        tmp_path, {"model": {"nnunet": {"folder": str(folder)}, "torchscript": "m.ts"}}
    )
    assert any("one model source" in p for p in problems)
    problems = _problems(tmp_path, {"model": {"nnunet": {"folder": str(folder), "folds": [0, 0]}}})
    assert any("distinct" in p for p in problems)
    problems = _problems(tmp_path, {"model": {"nnunet": {"folder": str(tmp_path / "nope")}}})
    assert any("model.nnunet.folder" in p and "does not exist" in p for p in problems)
