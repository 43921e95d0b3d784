"""Config: every problem reported with its key path; unknown keys get a suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from xaimed.config import load_config, parse_bytes
from xaimed.errors import ConfigError
from xaimed.templates import render_template


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


BASE = {"model": {"torchscript": "m.pt"}, "methods": ["saliency"]}


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.pt").write_bytes(b"x")
    path = tmp_path / "sub" / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    config = load_config(path)
    assert config.model.torchscript == (tmp_path / "sub" / "m.pt").resolve()


def test_unknown_keys_get_the_nearest_valid_key(tmp_path):
    data = {
        "model": {"torchscript": "m.pt", "clases": ["a", "b"]},
        "preprocessing": {"resample": {"spacng": [1, 1, 1]}},
        "method": [],
        "methods": ["saliency"],
    }
    problems = _problems(_write(tmp_path, data))
    assert "c.yaml: model.clases: unknown key 'clases'; did you mean 'classes'?" in problems
    assert (
        "c.yaml: preprocessing.resample.spacng: unknown key 'spacng'; did you mean 'spacing'?"
        in problems
    )
    assert "c.yaml: method: unknown key 'method'; did you mean 'methods'?" in problems


def test_every_problem_is_reported_at_once(tmp_path):
    data = {
        "model": {"torchscript": "m.pt", "output": "logit"},
        "runtime": {"device": "gpu", "memory_budget": "lots"},
        "methods": [
            {"name": "integrated_gradient"},
            {"name": "integrated_gradients", "params": {"steps": 1, "baselin": "zero"}},
        ],
    }
    problems = "\n".join(_problems(_write(tmp_path, data)))
    assert "model.output: Input should be 'logits' or 'probabilities'" in problems
    assert "runtime.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'" in problems
    assert "runtime.memory_budget: expected a size like '2GB'" in problems
    assert "methods[0].name: unknown method 'integrated_gradient'; did you mean" in problems
    assert "methods[1].params.steps: Input should be greater than or equal to 2" in problems
    assert "methods[1].params.baselin: unknown key 'baselin'; did you mean 'baseline'?" in problems


def test_missing_model_file_and_missing_sections(tmp_path):
    problems = _problems(_write(tmp_path, BASE))
    assert any("model.torchscript: file" in p and "does not exist" in p for p in problems)
    problems = _problems(_write(tmp_path, {"methods": ["saliency"]}))
    assert problems == ["c.yaml: model: Field required"]


def test_yaml_syntax_error_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid YAML at line 2, column 17"):
        load_config(_write(tmp_path, "model:\n  torchscript: a: b\n"))


def test_target_class_name_must_be_a_model_class(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"x")
    data = {**BASE, "model": {"torchscript": "m.pt", "classes": ["healthy", "lesion"]}}
    data["target"] = {"class": "lesoin"}
    problems = _problems(_write(tmp_path, data))
    assert any("did you mean 'lesion'" in p for p in problems)
    data["target"] = {"class": "lesion"}
    assert load_config(_write(tmp_path, data)).target.class_ == "lesion"


def test_duplicate_method_ids_need_an_id(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"x")
    data = {**BASE, "methods": ["saliency", {"name": "saliency", "postprocess": {"abs": True}}]}
    assert any("appear twice" in p for p in _problems(_write(tmp_path, data)))
    data["methods"][1]["id"] = "saliency_abs"
    assert [m.output_id for m in load_config(_write(tmp_path, data)).methods] == [
        "saliency",
        "saliency_abs",
    ]


def test_unsafe_yaml_is_not_executed(tmp_path):
    text = "model: !!python/object/apply:os.system ['echo pwned']\nmethods: [saliency]\n"
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, text))


def test_template_validates_as_it_is(tmp_path):
    path = tmp_path / "xaimed.yaml"
    path.write_text(render_template())
    config = load_config(path)
    assert config.model.torchscript is not None and config.model.torchscript.is_file()
    assert [m.name for m in config.methods] == ["integrated_gradients", "saliency", "smoothgrad"]


@pytest.mark.parametrize(
    ("text", "value"),
    [("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), (1024, 1024), ("1.5 gib", 1610612736)],
)
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value
