"""Config: every problem reported with its key path; unknown keys get a suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from xaimed.config import Config, load_config, parse_bytes, with_overrides
from xaimed.config.loading import MAX_CONFIG_BYTES
from xaimed.config.problems import render
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
    assert "model.output: input should be 'logits' or 'probabilities', got 'logit'" in problems
    assert "runtime.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'" in problems
    assert "runtime.memory_budget: expected a size like '2GB'" in problems
    assert "methods[0].name: unknown method 'integrated_gradient'; did you mean" in problems
    assert "methods[1].params.steps: input should be greater than or equal to 2, got 1" in problems
    assert "methods[1].params.baselin: unknown key 'baselin'; did you mean 'baseline'?" in problems


def test_missing_model_file_and_missing_sections(tmp_path):
    problems = _problems(_write(tmp_path, BASE))
    assert any("model.torchscript: file" in p and "does not exist" in p for p in problems)
    problems = _problems(_write(tmp_path, {"methods": ["saliency"]}))
    assert problems == ["c.yaml: model: field required"]


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


# ---------------------------------------------------------------- validated completely at load


def _model_file(tmp_path: Path) -> dict:
    (tmp_path / "m.pt").write_bytes(b"x")
    return {"torchscript": str(tmp_path / "m.pt")}


def test_the_schema_itself_refuses_unknown_methods_bad_parameters_and_devices(tmp_path):
    model = _model_file(tmp_path)
    for data, expected in [
        (
            {"methods": ["no_such_method"]},
            "methods[0].name: unknown method 'no_such_method' (`xaimed methods` lists them)",
        ),
        (
            {"methods": [{"name": "occlusion", "params": {"window": -3}}]},
            "methods[0].params.window: input should be greater than or equal to 1, got -3",
        ),
        (
            {"methods": ["saliency"], "runtime": {"device": "gpu"}},
            "runtime.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'",
        ),
    ]:
        with pytest.raises(ValidationError) as info:
            Config.model_validate({"model": model, **data})
        assert render(info.value, Config) == [expected]


def test_union_errors_name_no_pydantic_internals(tmp_path):
    data = {
        "model": _model_file(tmp_path),
        "methods": [
            {"name": "occlusion", "params": {"window": -3, "stride": [1]}},
            {"name": "integrated_gradients", "params": {"baseline": "foo"}},
        ],
    }
    problems = _problems(_write(tmp_path, data))
    assert problems == [
        "c.yaml: methods[0].params.window: input should be greater than or equal to 1, got -3",
        "c.yaml: methods[0].params.stride[1]: too few values: give one per axis (three; two for "
        "a 2D model)",
        "c.yaml: methods[0].params.stride[2]: too few values: give one per axis (three; two for "
        "a 2D model)",
        "c.yaml: methods[1].params.baseline: expected 'zero', 'min', 'mean', a number, or a "
        "mapping with kind: blur, noise or reference, got 'foo'",
    ]


def test_method_parameters_are_validated_once_with_defaults(tmp_path):
    data = {"model": _model_file(tmp_path), "methods": [{"name": "occlusion", "params": {}}]}
    entry = load_config(_write(tmp_path, data)).methods[0]
    assert entry.settings.window == 8 and entry.settings.stride == 4
    assert entry.params == {}  # what the config said, which the config hash covers


def test_a_validated_config_cannot_be_changed(tmp_path):
    config = load_config(
        _write(tmp_path, {"model": _model_file(tmp_path), "methods": ["saliency"]})
    )
    with pytest.raises(ValidationError, match="frozen"):
        config.runtime.device = "gpu"  # type: ignore[misc]


def test_overrides_make_a_new_validated_config(tmp_path):
    config = load_config(
        _write(tmp_path, {"model": _model_file(tmp_path), "methods": ["saliency"]})
    )
    other = with_overrides(config, methods=["grad_cam", "lrp"], device="cpu")
    assert [m.name for m in other.methods] == ["grad_cam", "lrp"]
    assert other.runtime.device == "cpu" and other.base_dir == config.base_dir
    assert [m.name for m in config.methods] == ["saliency"] and config.runtime.device == "auto"
    with pytest.raises(ConfigError) as info:
        with_overrides(config, device="gpu")
    assert info.value.problems == [
        "--device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"
    ]
    with pytest.raises(ConfigError, match=r"--method 'gradcam': unknown method; did you mean "):
        with_overrides(config, methods=["gradcam"])


def test_an_alias_bomb_is_refused_at_load(tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join(["*" + chr(96 + i)] * 10) + "]")
    text = "\n".join(lines) + "\nmodel: {torchscript: m.pt}\nmethods: [saliency]\n"
    with pytest.raises(ConfigError, match=r"expands to more than 100000 values through its alias"):
        load_config(_write(tmp_path, text))


def test_a_few_aliases_are_fine(tmp_path):
    model = _model_file(tmp_path)
    text = (
        f"model: {{torchscript: {model['torchscript']}}}\n"
        "methods:\n  - {name: integrated_gradients, params: &p {baseline: min}}\n"
        "  - {name: deeplift, params: *p}\n"
    )
    assert [m.settings.baseline for m in load_config(_write(tmp_path, text)).methods] == [
        "min",
        "min",
    ]


def test_an_oversized_or_non_utf8_config_is_one_sentence(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match=r"big.yaml: the config is \d+ bytes, more than"):
        load_config(path)
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model: {torchscript: m.pt}\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: the config is not UTF-8 text (byte 33, line 2); save it as UTF-8."
    )
