"""Model loading: TorchScript, architecture + state dict, safe refusal of pickles."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import TESTS
from tiny_models import TinyCNN

from xaimed.config import ModelSection
from xaimed.errors import ModelError
from xaimed.model import load_model

CPU = torch.device("cpu")


def _section(**kwargs) -> ModelSection:
    return ModelSection.model_validate(kwargs)


def _arch(weights, **extra) -> ModelSection:
    return _section(
        architecture="tiny_models:TinyCNN", python_path=[TESTS], weights=weights, **extra
    )


def test_state_dict_loads_in_eval_mode_with_its_hash(tiny_state):
    loaded = load_model(_arch(tiny_state), CPU)
    assert not loaded.module.training and not loaded.is_script
    assert len(loaded.sha256) == 64
    x = torch.randn(1, 1, 6, 6, 6)
    reference = TinyCNN()
    reference.load_state_dict(torch.load(tiny_state, weights_only=True))
    torch.testing.assert_close(loaded.module(x), reference.eval()(x))


def test_torchscript_loads(tmp_path, tiny_state):
    model = TinyCNN()
    model.load_state_dict(torch.load(tiny_state, weights_only=True))
    path = tmp_path / "m.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model.eval()), str(path))
    loaded = load_model(_section(torchscript=path), CPU)
    assert loaded.is_script
    x = torch.randn(1, 1, 6, 6, 6)
    torch.testing.assert_close(loaded.module(x), model(x))


def test_a_training_checkpoint_with_numpy_scalars_loads_without_allow_pickle(tmp_path):
    # One loader for every checkpoint (xaimed.models.checkpoint): the numpy scalars training
    # loops store beside the weights are safe to rebuild, so no allow_pickle is needed.
    import numpy as np

    model = TinyCNN()
    path = tmp_path / "epoch3.ckpt"
    torch.save({"state_dict": model.state_dict(), "best": np.float64(0.91), "epoch": 3}, path)
    loaded = load_model(_arch(path), CPU)
    x = torch.randn(1, 1, 6, 6, 6)
    torch.testing.assert_close(loaded.module(x), model.eval()(x))


def test_pickled_whole_model_is_refused_unless_allowed(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(TinyCNN(), path)
    with pytest.raises(
        ModelError, match=r"whole\.pt: the file holds pickled objects.*allow_pickle"
    ):
        load_model(_arch(path), CPU)
    loaded = load_model(_section(weights=path, allow_pickle=True), CPU)
    assert isinstance(loaded.module, TinyCNN)


def test_checkpoint_that_does_not_fit_names_the_mismatch(tiny_state):
    with pytest.raises(ModelError, match=r"does not fit model\.architecture.*size mismatch"):
        load_model(_arch(tiny_state, kwargs={"width": 6}), CPU)


def test_wrapped_state_dicts_are_unwrapped(tmp_path, tiny_state):
    state = torch.load(tiny_state, weights_only=True)
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    loaded = load_model(_arch(path), CPU)
    torch.testing.assert_close(loaded.module.fc.weight, state["fc.weight"])


def test_bad_import_path_and_garbage_files(tmp_path, tiny_state):
    with pytest.raises(
        ModelError, match=r"cannot import module 'no_such_pkg.nets' \(No module named"
    ):
        load_model(_section(architecture="no_such_pkg.nets:Net", weights=tiny_state), CPU)
    garbage = tmp_path / "garbage.ts"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match=r"garbage\.ts: not a loadable TorchScript file"):
        load_model(_section(torchscript=garbage), CPU)


def test_inplace_activations_are_switched_off(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 1, 1), torch.nn.ReLU(inplace=True))
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    loaded = load_model(_section(weights=path, allow_pickle=True), CPU)
    assert loaded.module[1].inplace is False
