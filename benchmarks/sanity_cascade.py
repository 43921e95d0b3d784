"""Is the model-randomisation test strong enough on the sample model? A measurement.

``xaimed explain`` warns that guided backprop failed published sanity checks (Adebayo et al.
2018: its maps barely change under cascading randomisation), while ``xaimed evaluate`` reported
it passing the cascade on every sample case. This script re-runs the cascade of
``xaimed evaluate`` (the same randomised models: layers re-initialised from the output, each
after ``torch.manual_seed(seed + 1)``) on the six sample cases for guided backprop and for
two methods that are known to pass (saliency, Grad-CAM), and compares each
randomised map with the original by several similarity measures:

- ``spearman_abs``: Spearman of |map| over the whole volume (the evaluate default);
- ``spearman_abs_body``: the same over the body only (Otsu foreground of the source image);
  background voxels are most of a head scan and their ranks are noise for every method;
- ``spearman_raw``: Spearman of the signed maps;
- ``ssim``: 3D SSIM of |map| (each scaled by its largest magnitude).

It prints, per method, the mean over cases at full randomisation and after the first cascade
step (the output layer only), and writes every value to
``benchmarks/results/sanity_cascade_sample.json``.

    .venv/bin/python benchmarks/sanity_cascade.py
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from xaimed.config import MethodEntry, load_config
from xaimed.engine.scoring import build_scorer
from xaimed.evaluate.sanity import randomised_cascade
from xaimed.evaluate.session import like, open_case, reexplain
from xaimed.evaluate.similarity import spearman, ssim
from xaimed.io.case import Case
from xaimed.model import load_model
from xaimed.writers.display import foreground_mask

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["guided_backprop", "saliency", "grad_cam"]
OUT = ROOT / "benchmarks" / "results" / "sanity_cascade_sample.json"


def _measures(original: np.ndarray, randomised: np.ndarray, body: np.ndarray) -> dict:
    return {
        "spearman_abs": spearman(original, randomised, absolute=True),
        "spearman_abs_body": spearman(original[body], randomised[body], absolute=True),
        "spearman_raw": spearman(original, randomised, absolute=False),
        "ssim": ssim(original, randomised, absolute=True),
    }


def main() -> None:
    """Run the cascade on the sample cases and print and save the similarities."""
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(2)
    config = load_config(ROOT / "configs" / "sample.yaml")
    entries = {e.output_id: e for e in config.methods}
    loaded = load_model(config.model, torch.device("cpu"))
    scorer = build_scorer(loaded.module, config, is_script=loaded.is_script)
    results: list[dict] = []
    start = time.perf_counter()
    for path in sorted((ROOT / "sample_data" / "images").glob("*.nii.gz")):
        case = open_case(Case(path.name[:6], path), config, scorer, torch.device("cpu"))
        with torch.no_grad():
            target = int(scorer.counting(case.inputs).argmax())
        body = foreground_mask(case.prepared.source.array)
        for method in METHODS:
            entry: MethodEntry = entries.get(method, MethodEntry(name=method))
            original = reexplain(scorer, case, entry, target, config)
            steps = []
            for layer, model in randomised_cascade(loaded.module, config.runtime.seed):
                randomised = reexplain(like(scorer, model, config), case, entry, target, config)
                steps.append({"layer": layer, **_measures(original, randomised, body)})
            results.append({"case": case.case_id, "method": method, "steps": steps})
            for step in steps:
                print(
                    f"{case.case_id} {method:16s} {step['layer']:14s} "
                    + " ".join(f"{k}={v:.3f}" for k, v in step.items() if k != "layer"),
                    flush=True,
                )
    keys = ["spearman_abs", "spearman_abs_body", "spearman_raw", "ssim"]
    summary = {}
    print("\nmean over the sample cases (first: output layer only; second: and the layer below;")
    print("full: every layer)")
    print(f"{'method':22s} {'step':6s} " + " ".join(f"{k:>17s}" for k in keys))
    for method in METHODS:
        rows = [r for r in results if r["method"] == method]
        summary[method] = {}
        for label, index in (("first", 0), ("second", 1), ("full", -1)):
            means = {k: float(np.nanmean([r["steps"][index][k] for r in rows])) for k in keys}
            summary[method][label] = means
            print(f"{method:22s} {label:6s} " + " ".join(f"{means[k]:17.3f}" for k in keys))
    wall = time.perf_counter() - start
    print(f"\n{wall:.0f} s")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {"torch": torch.__version__, "wall_s": round(wall, 1), "summary": summary,
             "cases": results},
            indent=1,
        )
        + "\n"
    )  # fmt: skip


if __name__ == "__main__":
    main()
