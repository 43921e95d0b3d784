"""An occlusion window (or grid block) covering a whole small image gives a map of one value:
valid, but the run says so in a warning naming the cause rather than leaving a flat map."""

from __future__ import annotations

import pytest
import torch
from conftest import run_method
from tiny_models import TinyCNN

PHRASE = "covers the whole model input (6 x 5 x 4 voxels), so the map is one value everywhere"


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyCNN().eval()


def _x():
    torch.manual_seed(1)
    return torch.randn(1, 1, 6, 5, 4)


@pytest.mark.parametrize("engine", ["plain", "auto"])
def test_window_larger_than_the_input_warns_and_gives_a_flat_map(model, engine):
    attribution, details, _ = run_method(
        "occlusion", model, _x(), window=[8, 8, 8], stride=[8, 8, 8], engine=engine
    )
    assert details["windows"] == 1
    assert torch.unique(attribution).numel() == 1
    assert details["warnings"] == [f"one occlusion window {PHRASE}; give a smaller window."]


@pytest.mark.parametrize("engine", ["plain", "auto"])
def test_grid_block_larger_than_the_input_warns(model, engine):
    _, details, _ = run_method(
        "feature_ablation", model, _x(), grouping={"kind": "grid", "size": [10, 10, 10]},
        engine=engine,
    )  # fmt: skip
    assert details["warnings"] == [f"one grid block {PHRASE}; give a smaller grouping.size."]


def test_windows_that_tile_the_input_do_not_warn(model):
    _, details, _ = run_method("occlusion", model, _x(), window=[3, 3, 2], stride=[3, 3, 2])
    assert details["windows"] > 1 and "warnings" not in details
