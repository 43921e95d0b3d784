"""Which baseline should the gradient methods use, and which fill the perturbation methods?

Measured on two studies with lesion masks, through xaimed's own commands (``xaimed explain``,
then ``xaimed evaluate`` for localisation and faithfulness):

- ``sample``: the sample study's lesion cases (case01, case03, case05; geometric phantoms,
  ``configs/sample.yaml``'s model and preprocessing);
- ``mni``: the lesion cases of the MNI152 study that ``scripts/make_mni_study.py`` builds (real
  anatomy: the MNI152 template with synthetic white-matter lesions), with its trained model.

Candidates, each its own method id in one explain run per study:

- integrated gradients (16 steps) and DeepLift: baseline ``zero`` (the z-scored image's mean),
  ``min`` (background), a blurred copy (sigma 8 mm);
- GradientShap (8 samples): baselines ``[zero]``, ``[min]``, ``[blur 8 mm]``, ``[zero, min]``
  and ``[noise]`` (seeded Gaussian noise with the image's statistics);
- occlusion at its default window (8) and stride (4), ``engine: auto`` (the same map as the
  plain engine, faster): fill ``zero``, ``min``, blur 8 mm and blur 16 mm (half the window).

Metrics, per map: deletion and insertion areas (20 steps) with the removed voxels set to
``min`` and (``--deletion min,mean``, the default) in a second evaluation to ``mean``; the
curves follow the probability on the sample study and the logit on the MNI study (whose model's
probabilities saturate); mass inside the lesion, AUROC, pointing game, and the lesion/rest
ratio: mean |attribution| per voxel inside the lesion over that outside it (issue 14's
criterion). A candidate's score is its mean rank within its method over the ranked metrics
(deletion and insertion per deletion baseline, mass inside, AUROC, lesion/rest; ties share
their mean rank) and both studies; the lowest wins. Pointing game is shown, not ranked (it is
1 for nearly every candidate).

Writes ``benchmarks/results/baselines.json`` and prints the README's tables.

    .venv/bin/python scripts/make_mni_study.py     # once: builds runs/mni-study
    .venv/bin/python benchmarks/baselines.py --deletion min   # ~25 min on 2 shared cores
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import yaml
from scipy import stats

from xaimed.writers.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]
BLUR = {4: {"kind": "blur", "sigma_mm": 4.0}, 8: {"kind": "blur", "sigma_mm": 8.0},
        16: {"kind": "blur", "sigma_mm": 16.0}}  # fmt: skip
NOISE = {"kind": "noise"}

CANDIDATES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "integrated_gradients": [
        ("zero", {"baseline": "zero"}),
        ("min", {"baseline": "min"}),
        ("blur 8 mm", {"baseline": BLUR[8]}),
    ],
    "deeplift": [
        ("zero", {"baseline": "zero"}),
        ("min", {"baseline": "min"}),
        ("blur 8 mm", {"baseline": BLUR[8]}),
    ],
    "gradient_shap": [
        ("[zero]", {"baselines": ["zero"]}),
        ("[min]", {"baselines": ["min"]}),
        ("[blur 8 mm]", {"baselines": [BLUR[8]]}),
        ("[zero, min]", {"baselines": ["zero", "min"]}),
        ("[noise]", {"baselines": [NOISE]}),
    ],
    "occlusion": [
        ("zero", {"baseline": "zero"}),
        ("min", {"baseline": "min"}),
        ("blur 8 mm", {"baseline": BLUR[8]}),
        ("blur 16 mm", {"baseline": BLUR[16]}),
    ],
}
# Kept small for a shared 2-core machine: fewer steps and samples than the defaults (the
# baseline's effect does not depend on them); occlusion at its default window and stride.
FIXED = {
    "integrated_gradients": {"steps": 16},
    "gradient_shap": {"samples": 8},
    "occlusion": {"engine": "auto"},
}
FAITHFULNESS_STEPS = 20
RANKED = {  # metric -> higher is better
    "deletion_auc@min": False,
    "deletion_auc@mean": False,
    "insertion_auc@min": True,
    "insertion_auc@mean": True,
    "mass_inside": True,
    "auroc": True,
    "lesion_ratio": True,
}
SHOWN = (*RANKED, "pointing_game")
# The MNI model is so sure (p(lesion) 0.99-1.00) that probability curves stay at 1 until nearly
# everything is removed; its curves follow the logit instead.
CURVE_SCORE = {"sample": "probability", "mni": "logit"}


def _method_id(method: str, label: str) -> str:
    clean = label.strip("[]").replace(", ", "_").replace(" mm", "").replace(" ", "")
    return f"{method}-{clean}"


def _study(name: str, mni_dir: Path) -> tuple[dict[str, Any], Path, list[str]]:
    """The study's config (as a dict), its image folder and its lesion cases."""
    if name == "sample":
        config = yaml.safe_load((REPO / "configs" / "sample.yaml").read_text())
        config["model"]["weights"] = str(REPO / "xaimed" / "sample" / "sample_cnn_state.pt")
        masks = REPO / "sample_data" / "masks"
        images = REPO / "sample_data" / "images"
        config["evaluate"] = {"masks": f"{masks}/{{case_id}}_lesion.nii.gz"}
    else:
        if not (mni_dir / "config.yaml").is_file():
            raise SystemExit(f"{mni_dir}: no MNI study; run scripts/make_mni_study.py first.")
        config = yaml.safe_load((mni_dir / "config.yaml").read_text())
        images, masks = mni_dir / "images", mni_dir / "masks"
    cases = sorted(p.name.removesuffix("_lesion.nii.gz") for p in masks.glob("*_lesion.nii.gz"))
    return config, images, cases


def _run(args: list[str]) -> None:
    command = [str(Path(sys.executable).parent / "xaimed"), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 1:  # some cases or values failed: say which, keep the rest
        print(f"xaimed {args[0]}: some values failed:\n{done.stderr[-2000:]}", file=sys.stderr)
    elif done.returncode != 0:
        raise SystemExit(f"xaimed {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def measure(
    name: str, mni_dir: Path, work: Path, cases_limit: int, deletions: list[str]
) -> dict[str, Any]:
    """Explain and evaluate every candidate on one study; per-candidate means."""
    config, images, cases = _study(name, mni_dir)
    cases = cases[:cases_limit]
    folder = work / name
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for case in cases:
        link = folder / "images" / f"{case}.nii.gz"
        if not link.exists():
            link.symlink_to(images / f"{case}.nii.gz")
    config["methods"] = [
        {"name": method, "id": _method_id(method, label), "params": {**FIXED.get(method, {}), **p}}
        for method, candidates in CANDIDATES.items()
        for label, p in candidates
    ]
    config["outputs"] = {"nifti": True, "png": False}
    config["runtime"] = {**config.get("runtime", {}), "device": "cpu", "seed": 0}
    timings = {}
    started = time.perf_counter()
    cfg_path = folder / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    if not (folder / "run" / "manifest.csv").is_file():  # an earlier run's maps are reused
        _run(["explain", str(folder / "images"), "--config", str(cfg_path),
              "--out", str(folder / "run"), "--quiet"])  # fmt: skip
        timings["explain_s"] = time.perf_counter() - started
    rows: list[dict[str, str]] = []
    for deletion in deletions:
        started = time.perf_counter()
        config["evaluate"] = {
            **config["evaluate"],
            "faithfulness": {
                "baseline": deletion,
                "steps": FAITHFULNESS_STEPS,
                "score": CURVE_SCORE[name],
            },
        }
        eval_cfg = folder / f"evaluate-{deletion}.yaml"
        eval_cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        out = folder / f"evaluate-{deletion}"
        metrics = ["faithfulness"] + (["localisation"] if deletion == deletions[0] else [])
        if not (out / "metrics.csv").is_file():
            _run(["evaluate", str(folder / "run"), "--config", str(eval_cfg), "--out", str(out),
                  "--quiet", *[a for m in metrics for a in ("--metric", m)]])  # fmt: skip
            timings[f"evaluate_{deletion}_s"] = time.perf_counter() - started
        with (out / "metrics.csv").open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row["metric"] in ("deletion_auc", "insertion_auc"):
                    row["metric"] += f"@{deletion}"
                rows.append(row)
    rows += _lesion_ratios(folder / "run", Path(config["evaluate"]["masks"]))
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["value"] != "":
            values[row["method"]][row["metric"]].append(float(row["value"]))
    return {
        "cases": cases,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "means": {
            method: {metric: float(np.mean(v)) for metric, v in by_metric.items()}
            for method, by_metric in values.items()
        },
        "per_case": {
            method: {metric: v for metric, v in by_metric.items()}
            for method, by_metric in values.items()
        },
    }


def _lesion_ratios(run: Path, mask_template: Path) -> list[dict[str, str]]:
    """Mean |attribution| per voxel inside the lesion over that outside, per map."""
    out = []
    # Output paths in a manifest are relative to its folder; read_manifest resolves them.
    for row in read_manifest(run / "manifest.csv"):
        if row["status"] != "ok" or not row["nifti"]:
            continue
        a = np.abs(np.asarray(nib.load(row["nifti"]).get_fdata(dtype=np.float32)))
        mask_path = str(mask_template).replace("{case_id}", row["case_id"])
        m = np.asarray(nib.load(mask_path).dataobj) > 0
        inside, outside = float(a[m].mean()), float(a[~m].mean())
        ratio = inside / outside if outside > 0 else float("nan")
        out.append({"case_id": row["case_id"], "method": row["method"],
                    "metric": "lesion_ratio", "value": str(ratio)})  # fmt: skip
    return out


def rank(studies: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean rank of each candidate within its method over the ranked metrics and studies."""
    result: dict[str, Any] = {}
    for method, candidates in CANDIDATES.items():
        ids = [_method_id(method, label) for label, _ in candidates]
        ranks: dict[str, list[float]] = defaultdict(list)
        for study in studies.values():
            for metric, higher in RANKED.items():
                scores = [study["means"][i].get(metric, np.nan) for i in ids]
                if all(np.isnan(scores)):
                    continue  # not measured in this run (--deletion)
                # Ties share their mean rank (a saturated metric then ranks nobody ahead).
                order = stats.rankdata([-s if higher else s for s in scores])
                for i, r in zip(ids, order, strict=True):
                    ranks[i].append(float(r))
        mean_rank = {i: float(np.mean(r)) for i, r in ranks.items()}
        winner = min(ids, key=lambda i: mean_rank[i])
        labels = dict(zip(ids, (label for label, _ in candidates), strict=True))
        result[method] = {
            "mean_rank": {labels[i]: round(mean_rank[i], 2) for i in ids},
            "winner": labels[winner],
            "winner_params": dict(candidates)[labels[winner]],
        }
    return result


def tables(studies: dict[str, dict[str, Any]], ranking: dict[str, Any]) -> str:
    """Markdown tables: per method, each candidate's means on each study and its mean rank."""
    lines = []
    measured = {m for st in studies.values() for v in st["means"].values() for m in v}
    shown = [m for m in SHOWN if m in measured]
    heads = {"deletion_auc@min": "del@min ↓", "deletion_auc@mean": "del@mean ↓",
             "insertion_auc@min": "ins@min ↑", "insertion_auc@mean": "ins@mean ↑",
             "mass_inside": "mass in ↑", "auroc": "AUROC ↑", "pointing_game": "pointing ↑",
             "lesion_ratio": "lesion/rest ↑"}  # fmt: skip
    for method, candidates in CANDIDATES.items():
        lines.append(f"\n**{method}** (winner: {ranking[method]['winner']})\n")
        lines.append("| baseline | study | " + " | ".join(heads[m] for m in shown) + " | rank |")
        lines.append("|---|---|" + "---|" * (len(shown) + 1))
        for label, _ in candidates:
            mid = _method_id(method, label)
            for name, study in studies.items():
                means = study["means"].get(mid, {})
                cells = [f"{means[m]:.3g}" if m in means else "–" for m in shown]
                rank_cell = f"{ranking[method]['mean_rank'][label]:.2f}" if name == "sample" else ""
                lines.append(f"| {label} | {name} | " + " | ".join(cells) + f" | {rank_cell} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mni", type=Path, default=REPO / "runs" / "mni-study")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-baselines")
    parser.add_argument("--cases", type=int, default=3, help="Lesion cases per study (at most).")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/baselines.json")
    parser.add_argument("--studies", default="sample,mni", help="Comma-separated subset.")
    parser.add_argument(
        "--deletion", default="min,mean", help="Deletion baselines, comma-separated."
    )
    parser.add_argument(
        "--reuse", type=Path, help="Take the studies not measured now from this earlier JSON."
    )
    args = parser.parse_args()
    studies = json.loads(args.reuse.read_text())["studies"] if args.reuse else {}
    for name in args.studies.split(","):
        studies[name] = measure(name, args.mni, args.work, args.cases, args.deletion.split(","))
    ranking = rank(studies)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"candidates": {m: [label for label, _ in c] for m, c in CANDIDATES.items()},
              "fixed_params": FIXED, "ranked_metrics": RANKED, "studies": studies,
              "ranking": ranking}  # fmt: skip
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(tables(studies, ranking))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
