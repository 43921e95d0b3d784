"""Config problems and set-up errors stop a run before any case, each as one sentence (exit 2);
the light commands (--help, methods, validate, init) never import torch; configs cannot call
arbitrary code; no `assert` guards anything in the package."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import blob_volume, oblique_affine, write_nifti
from typer.testing import CliRunner

from xaimed.cli import app

runner = CliRunner()
PACKAGE = Path(__file__).resolve().parents[1] / "xaimed"


def _invoke(*args: object):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result, result.stdout + (result.stderr or "")


def _one_sentence(text: str) -> str:
    """The single 'error:' line of ``text`` (and nothing that looks like a traceback)."""
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: ")
    return lines[0].removeprefix("error: ")


@pytest.fixture
def case(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "c1.nii.gz"
    write_nifti(path, blob_volume(), oblique_affine((2.0, 2.0, 2.0), "RAS"))
    return path


@pytest.fixture
def torchscript_config(tmp_path: Path) -> Path:
    """A valid config of a scripted model: validating it needs no torch."""
    model = torch.jit.script(torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.Flatten()))
    model.save(str(tmp_path / "m.pt"))
    path = tmp_path / "ts.yaml"
    path.write_text("model: {torchscript: m.pt}\nmethods: [saliency, occlusion]\n")
    return path


BAD_CONFIGS = {
    "device": ({"runtime": {"device": "gpu"}}, "runtime.device: expected 'auto', 'cpu', 'cuda' "
               "or 'cuda:N', got 'gpu'"),
    "method": ({"methods": ["gradcam"]}, "methods[0].name: unknown method 'gradcam'; did you "
               "mean 'grad_cam'? (`xaimed methods` lists them)"),
    "param": ({"methods": [{"name": "occlusion", "params": {"window": -3}}]},
              "methods[0].params.window: input should be greater than or equal to 1, got -3"),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(BAD_CONFIGS))
def test_config_problems_are_one_sentence_from_validate_and_explain(
    kind, tmp_path, case, make_config
):
    change, expected = BAD_CONFIGS[kind]
    config = make_config(**change)
    result, text = _invoke("validate", config)
    assert result.exit_code == 2
    assert _one_sentence(text) == f"config.yaml: {expected}"
    out = tmp_path / "out"
    result, text = _invoke("explain", case, "-c", config, "-o", out)
    assert result.exit_code == 2
    assert _one_sentence(text) == f"config.yaml: {expected}"
    assert not out.exists()  # refused before any case ran


def test_command_line_overrides_are_validated_like_the_config(tmp_path, case, make_config):
    out = tmp_path / "out"
    result, text = _invoke("explain", case, "-c", make_config(), "-o", out, "--device", "gpu")
    assert result.exit_code == 2
    assert _one_sentence(text) == "--device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"
    result, text = _invoke("explain", case, "-c", make_config(), "-o", out, "-m", "gradcam")
    assert result.exit_code == 2
    assert _one_sentence(text) == (
        "--method 'gradcam': unknown method; did you mean 'grad_cam'? (`xaimed methods` lists "
        "them)."
    )
    assert not out.exists()


def test_an_output_path_that_cannot_be_a_folder_is_exit_2(tmp_path, case, make_config):
    file = tmp_path / "taken"
    file.write_text("not a folder")
    for out, expected in [
        (file, f"--out {file}: is a file, not a folder; give a folder path."),
        (
            file / "sub",
            f"--out {file / 'sub'}: {file} is a file, so no folder can be made under it; give "
            "a folder path.",
        ),
    ]:
        result, text = _invoke("explain", case, "-c", make_config(), "-o", out)
        assert result.exit_code == 2
        assert _one_sentence(text) == expected
        result, text = _invoke("evaluate", tmp_path / "run", "-o", out)
        assert result.exit_code == 2
        assert _one_sentence(text) == expected


def test_a_rerun_that_skipped_everything_says_nothing_was_written(tmp_path, case, make_config):
    config, out = make_config(), tmp_path / "out"
    result, text = _invoke("explain", case, "-c", config, "-o", out)
    assert result.exit_code == 0, text
    assert "1 map(s) written, 0 failed" in text
    result, text = _invoke("explain", case, "-c", config, "-o", out)
    assert result.exit_code == 0, text
    assert "0 map(s) written, 1 done earlier and skipped, 0 failed" in text


def test_non_utf8_and_alias_bomb_configs_are_one_sentence(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("model: {torchscript: m.pt}\n# caf\xe9\n".encode("latin-1"))
    result, text = _invoke("validate", latin)
    assert result.exit_code == 2
    assert _one_sentence(text) == (
        f"{latin}: the config is not UTF-8 text (byte 33, line 2); save it as UTF-8."
    )
    bomb = tmp_path / "bomb.yaml"
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)
    ]
    bomb.write_text("\n".join(levels) + "\nmethods: [saliency]\n")
    result, text = _invoke("validate", bomb)
    assert result.exit_code == 2
    assert "expands to more than 100000 values through its aliases" in _one_sentence(text)


# ---------------------------------------------------------------- the model import allow-list


def test_a_config_cannot_call_anything_but_a_network_class(tmp_path, tiny_state, make_config):
    marker = tmp_path / "pwned"
    config = make_config(
        model={
            "architecture": "os:system",
            "kwargs": {"command": f"touch {marker}"},
            "weights": str(tiny_state),
        }
    )
    expected = (
        "config.yaml: model.architecture: 'os:system' is a builtin_function_or_method, not a "
        "torch.nn.Module subclass; xaimed builds only network classes (e.g. "
        "monai.networks.nets:DenseNet121), so that a config cannot call anything else"
    )
    for command in (["validate", config], ["layers", config]):
        result, text = _invoke(*command)
        assert result.exit_code == 2
        assert _one_sentence(text) == expected
    config = make_config(
        model={"architecture": "subprocess:Popen", "kwargs": {"args": ["touch", str(marker)]},
               "weights": str(tiny_state)},
    )  # fmt: skip
    result, text = _invoke("validate", config)
    assert result.exit_code == 2
    assert "'subprocess:Popen' is a class, not a torch.nn.Module subclass" in text
    assert not marker.exists()


def test_the_allow_list_holds_for_configs_built_in_code(tmp_path, tiny_state):
    from xaimed.config import ModelSection
    from xaimed.errors import ModelError
    from xaimed.model import load_model

    marker = tmp_path / "pwned"
    section = ModelSection(
        architecture="os:system", kwargs={"command": f"touch {marker}"}, weights=tiny_state
    )
    with pytest.raises(ModelError, match=r"'os:system' is a builtin_function_or_method, not a"):
        load_model(section, torch.device("cpu"))
    assert not marker.exists()


# ---------------------------------------------------------------- start-up without torch

_RUN_CLI = """
import sys
{block}
sys.argv = ["xaimed", *{args!r}]
from xaimed.cli import app
try:
    app()
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "captum", "monai", "numpy"}})
print("HEAVY", heavy, "EXIT", code)
"""


def _run_cli(args: list[str], *, block_torch: bool, cwd: Path) -> str:
    # sys.modules[name] = None makes every `import name` fail, as if torch were not installed.
    block = "sys.modules['torch'] = None" if block_torch else ""
    code = textwrap.dedent(_RUN_CLI).format(block=block, args=args)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    "args",
    [["--help"], ["explain", "--help"], ["methods"], ["init", "new.yaml"], ["validate", "ts.yaml"]],
)
def test_light_commands_import_no_torch(args, torchscript_config):
    text = _run_cli(args, block_torch=False, cwd=torchscript_config.parent)
    assert "HEAVY [] EXIT 0" in text, text


def test_validate_runs_with_torch_unavailable(torchscript_config, tmp_path):
    text = _run_cli(["validate", "ts.yaml"], block_torch=True, cwd=tmp_path)
    assert "ts.yaml: valid" in text and "EXIT 0" in text, text
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"torchscript": "m.pt"}, "methods": ["gradcam"],
                                   "runtime": {"device": "gpu"}}))  # fmt: skip
    text = _run_cli(["validate", "bad.yaml"], block_torch=True, cwd=tmp_path)
    assert "methods[0].name: unknown method 'gradcam'; did you mean 'grad_cam'?" in text
    assert "runtime.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'" in text
    assert "EXIT 2" in text and "Traceback" not in text


def test_help_shows_no_value_for_on_off_flags():
    result, text = _invoke("explain", "--help")
    assert result.exit_code == 0
    assert "<bool>" not in text
    assert "--dry-run " in text and "--method NAME" in text and "--device DEVICE" in text


# ---------------------------------------------------------------- no assert in the package


def test_no_assert_statements_in_the_package():
    """`python -O` strips asserts, so none may guard anything: user input gets an XaimedError,
    internal invariants an explicit RuntimeError."""
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assert)
    ]
    assert found == []


@pytest.mark.parametrize("command", ["validate", "explain"])
def test_sigterm_stops_loading_and_validation(command, tmp_path, tiny_state, case):
    """A config whose validation takes long (its architecture module is slow to import) still
    ends promptly on SIGTERM, before anything is written."""
    (tmp_path / "slow_net.py").write_text(
        "import time\ntime.sleep(60)\nfrom tiny_models import TinyCNN\n"
    )
    config = tmp_path / "slow.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "architecture": "slow_net:TinyCNN",
                    "python_path": [str(tmp_path), str(Path(__file__).parent)],
                    "weights": str(tiny_state),
                },
                "methods": ["saliency"],
            }
        )
    )
    args = ["validate", str(config)]
    if command == "explain":
        args = ["explain", str(case), "-c", str(config), "-o", str(tmp_path / "out")]
    process = subprocess.Popen(
        [sys.executable, "-m", "xaimed", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    time.sleep(3)  # xaimed is importing slow_net by now
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGTERM
    assert not (tmp_path / "out").exists()
