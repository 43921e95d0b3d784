"""The evaluation's values on one tiny case equal those the evaluation code gave before the
Metric protocol and the speed work (stored in tests/data/evaluate/reference.json, see
tests/evaluate_reference.py). The model now runs in channels-last layout on the CPU, the same
computation summed in another order, so values agree to float32 rounding, not bit for bit."""

from __future__ import annotations

import json
import math
from pathlib import Path

from conftest import TESTS
from evaluate_reference import evaluate_rows


def test_values_equal_the_stored_reference(tmp_path: Path):
    stored = json.loads((TESTS / "data" / "evaluate" / "reference.json").read_text())
    rows = evaluate_rows(tmp_path)
    key = ("method", "target", "metric", "detail")
    assert [tuple(r[k] for k in key) for r in rows] == [tuple(r[k] for k in key) for r in stored]
    for new, old in zip(rows, stored, strict=True):
        if old["value"] is None:
            assert new["value"] is None, new
        else:
            assert math.isclose(new["value"], old["value"], rel_tol=1e-5, abs_tol=1e-6), (new, old)
