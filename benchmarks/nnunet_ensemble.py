"""Time and peak memory of explaining an nnU-Net ensemble, by number of folds.

Explains one case with ``input_x_gradient`` through ``xaimed.pipeline.explain`` (nnU-Net's
preprocessing, sliding window and export geometry; the ensemble's map, then each member's map for
the per-voxel std and agreement) for ensembles of 1, 2 and 4 folds of the tiny nnU-Net the tests
train (tests/nnunet_fixture.py; folds 2 and 3 are copies of 0 and 1, which changes nothing for
time or memory). The peer is the same explanation with the members of the gradient pass run
without activation checkpointing (all members' activations held for the backward pass), which is
what xaimed avoids.

Each run is its own child process (``--child``), one after the other, so peak memories do not
mix. A child loads everything, reads its resident memory (VmRSS), runs the explanation and
reports its wall time and peak resident memory (``ru_maxrss``) minus the resident memory before
the run: the memory the explanation itself needed.

    .venv/bin/python benchmarks/nnunet_ensemble.py RESULTS_FOLDER [--size 96 96 48]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(folder: Path, folds: int, checkpointing: bool, size: list[int], out: Path) -> None:
    import nibabel as nib
    import torch
    import yaml

    sys.path.insert(0, str(ROOT / "tests"))
    from nnunet_fixture import blob_case

    from xaimed.models.ensemble import EnsembleModule
    from xaimed.pipeline import explain

    if not checkpointing:  # the peer: every member's activations kept for the backward pass

        def plain(self: EnsembleModule, x: torch.Tensor) -> torch.Tensor:
            return sum(member(x) for member in self.members) / len(self.members)

        EnsembleModule.forward = plain  # type: ignore[method-assign]
    torch.set_num_threads(1)  # one thread: a busy shared machine makes two threads erratic
    spacing = (1.0, 1.0, 2.0)
    image, _ = blob_case(tuple(size), spacing, seed=3)
    case = out / "case.nii.gz"
    nib.save(nib.Nifti1Image(image, np.diag([*spacing, 1.0])), str(case))
    config = {
        "model": {"nnunet": {"folder": str(folder), "folds": list(range(folds))}},
        "target": {"class": "blob"},
        "methods": [{"name": "input_x_gradient"}],
        "outputs": {"png": False},
        "runtime": {"device": "cpu", "threads": 1},
    }
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    before = _rss_mib()
    t0 = time.perf_counter()
    result = explain(case, path, out / "run")
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = result.rows[0]
    print(json.dumps({
        "folds": folds, "checkpointing": checkpointing, "status": row["status"],
        "wall_s": round(wall, 2), "method_wall_s": row.get("wall_s"),
        "explain_peak_mib": round(peak - before, 1), "peak_rss_mib": round(peak, 1),
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path, help="an nnU-Net trainer folder with fold_0, fold_1")
    parser.add_argument("--size", type=int, nargs=3, default=[96, 96, 48])
    parser.add_argument("--child", nargs=2, metavar=("FOLDS", "CHECKPOINTING"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.folder, int(args.child[0]), args.child[1] == "1", args.size, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        shutil.copytree(args.folder, folder)
        for extra, source in ((2, 0), (3, 1)):
            shutil.copytree(folder / f"fold_{source}", folder / f"fold_{extra}")
        rows = []
        for folds in (1, 2, 4):
            for checkpointing in (True, False):
                if folds == 1 and not checkpointing:
                    continue  # one member is never checkpointed
                out = Path(tmp) / f"run_{folds}_{int(checkpointing)}"
                out.mkdir()
                done = subprocess.run(
                    [sys.executable, __file__, str(folder), "--size", *map(str, args.size),
                     "--child", str(folds), str(int(checkpointing)), "--out", str(out)],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    base = next(r for r in rows if r["folds"] == 1)
    print(f"\nsize {args.size}; ratios against 1 fold")
    print("| folds | members checkpointed | wall s | x 1 fold | explain peak MiB | x 1 fold |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['folds']} | {'yes' if r['checkpointing'] else 'no (peer)'} | {r['wall_s']} | "
            f"{r['wall_s'] / base['wall_s']:.2f} | {r['explain_peak_mib']} | "
            f"{r['explain_peak_mib'] / base['explain_peak_mib']:.2f} |"
        )
    results = ROOT / "benchmarks" / "results" / "nnunet_ensemble.json"
    results.write_text(json.dumps({"size": args.size, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
