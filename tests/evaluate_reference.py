"""One tiny case evaluated with every metric kind; its values are stored in
``tests/data/evaluate/reference.json`` from the evaluation code before the Metric protocol and
the speed work (main 8a5c115), so that a change to the values shows. Regenerate (only when a
value is meant to change, and say why in the commit):

    PYTHONPATH=OLD_TREE:tests .venv/bin/python tests/evaluate_reference.py \
        tests/data/evaluate/reference.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from conftest import blob_volume, oblique_affine, tiny_config, write_nifti
from tiny_models import TinyCNN


def evaluate_rows(work: Path) -> list[dict]:
    """metrics.csv's rows (as dicts, values as floats) of the tiny case's evaluation."""
    from xaimed.evaluate import evaluate
    from xaimed.pipeline import explain
    from xaimed.progress import LogReporter

    torch.manual_seed(0)
    model = TinyCNN()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), work / "tiny.pt")
    affine = oblique_affine((2.0, 2.0, 2.0), "RAS")
    write_nifti(work / "images" / "a.nii.gz", blob_volume(seed=3), affine)
    mask = np.zeros((20, 18, 14))
    mask[8:13, 7:12, 5:10] = 1
    write_nifti(work / "masks" / "a.nii.gz", mask, affine, dtype=np.uint8)
    config = tiny_config(
        work / "tiny.pt",
        methods=[{"name": "saliency"}, {"name": "integrated_gradients", "params": {"steps": 8}},
                 {"name": "grad_cam"}],
        evaluate={"masks": str(work / "masks" / "{case_id}.nii.gz"),
                  "faithfulness": {"steps": 5}, "robustness": {"samples": 2}},
    )  # fmt: skip
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    explain(work / "images", work / "config.yaml", work / "run", reporter=LogReporter())
    result = evaluate(work / "run", out_dir=work / "eval")
    return sorted(
        ({k: r[k] for k in ("case_id", "method", "target", "metric", "detail")}
         | {"value": None if np.isnan(r["value"]) else float(r["value"])} for r in result.rows),
        key=lambda r: (r["method"], r["metric"], r["detail"]),
    )  # fmt: skip


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        rows = evaluate_rows(Path(tmp))
    Path(sys.argv[1]).write_text(json.dumps(rows, indent=1) + "\n")
    print(len(rows), "rows")
