"""`xaimed evaluate` on the sample: this tree against an older commit, side by side in one run.

    .venv/bin/python benchmarks/evaluate.py [--old COMMIT] [--cases N] [--keep DIR]
        [--one-after-the-other]

The old commit is checked out in a temporary git worktree (``git worktree add --detach``) and
run with this tree's virtual environment (PYTHONPATH pointing at the old source). Each version
explains the sample's first N images with its own ``configs/sample.yaml`` (run folders differ
between versions: the old manifest holds absolute paths), then both evaluate their run with
their own ``configs/sample-evaluate.yaml`` (default metrics) **at the same time**, so both see
the same machine load. With ``--one-after-the-other`` the old evaluate runs alone, then the new
one (each has the machine to itself, apart from other users' work; written to
``evaluate_sample_sequential.json``). Printed and written to
``benchmarks/results/evaluate_sample.json``: each evaluate's wall time and CPU time (user +
system, from the child's resource usage: less sensitive than wall time to other work on a shared
machine), the load average around each, and old / new ratios.

The default old commit is main when issue 18 ("evaluate is slow") was filed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ISSUE_18_MAIN = "72d3566"


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def _explain(tree: Path, images: Path, out: Path) -> None:
    config = tree / "configs" / "sample.yaml"
    cmd = [sys.executable, "-m", "xaimed", "explain", str(images), "--config", str(config),
           "--out", str(out), "--quiet"]  # fmt: skip
    subprocess.run(cmd, cwd=tree, env=_env(tree), check=True, capture_output=True)


def _subset(tree: Path, cases: int, where: Path) -> Path:
    images = sorted((tree / "sample_data" / "images").glob("*.nii.gz"))[:cases]
    where.mkdir(parents=True)
    for image in images:
        shutil.copy(image, where / image.name)
    return where


def _evaluate_both(
    runs: dict[str, tuple[Path, Path]], work: Path, *, together: bool = True
) -> dict[str, dict]:
    """Start every evaluate at once (or, not ``together``, each after the previous one ended);
    wait for each, keeping its wall and CPU time."""
    results: dict[str, dict] = {}
    if not together:
        for name, entry in runs.items():
            results |= _evaluate_both({name: entry}, work)
        return results
    started, procs, load = {}, {}, {}
    for name, (tree, run) in runs.items():
        shutil.rmtree(work / f"eval-{name}", ignore_errors=True)  # no records to resume from
        load[name] = os.getloadavg()
        cmd = [sys.executable, "-m", "xaimed", "evaluate", str(run),
               "--config", str(tree / "configs" / "sample-evaluate.yaml"),
               "--out", str(work / f"eval-{name}"), "--quiet"]  # fmt: skip
        log = (work / f"eval-{name}.log").open("w")
        procs[name] = subprocess.Popen(cmd, cwd=tree, env=_env(tree), stdout=log, stderr=log)
        started[name] = time.perf_counter()
    by_pid = {p.pid: name for name, p in procs.items()}
    while by_pid:
        pid, status, usage = os.wait4(-1, 0)
        name = by_pid.pop(pid, None)
        if name is None:
            continue
        procs[name].returncode = os.waitstatus_to_exitcode(status)
        results[name] = {
            "wall_s": round(time.perf_counter() - started[name], 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "exit": procs[name].returncode,
            "load_average_before": [round(v, 2) for v in load[name]],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        }
    return results


def _head() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default=ISSUE_18_MAIN, help="commit to compare against")
    parser.add_argument("--cases", type=int, default=6, help="first N sample images (6: all)")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: temporary)")
    parser.add_argument("--one-after-the-other", action="store_true",
                        help="run the old evaluate alone, then the new one")  # fmt: skip
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="xaimed-bench-evaluate-"))
    work.mkdir(parents=True, exist_ok=True)
    old_tree = work / "old-tree"
    if not old_tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.old],
                       cwd=ROOT, check=True, capture_output=True)  # fmt: skip
    try:
        trees = {"old": old_tree, "new": ROOT}
        runs = {}
        for name, tree in trees.items():
            run = work / f"run-{name}"
            if not (run / "manifest.csv").is_file():
                _explain(tree, _subset(tree, args.cases, work / f"images-{name}"), run)
            runs[name] = (tree, run)
        times = _evaluate_both(runs, work, together=not args.one_after_the_other)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)],
                       cwd=ROOT, capture_output=True)  # fmt: skip
    old, new = times["old"], times["new"]
    result = {
        "old_commit": args.old,
        "new_commit": _head(),
        "cases": args.cases,
        "cpus": os.cpu_count(),
        "mode": "one after the other" if args.one_after_the_other else "at the same time",
        "old": old,
        "new": new,
        "wall_ratio": round(old["wall_s"] / new["wall_s"], 2),
        "cpu_ratio": round(old["cpu_s"] / new["cpu_s"], 2),
    }
    name = "evaluate_sample_sequential" if args.one_after_the_other else "evaluate_sample"
    out = ROOT / "benchmarks" / "results" / f"{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| version | wall s | CPU s |\n|---|---:|---:|")
    print(f"| {args.old} (old) | {old['wall_s']} | {old['cpu_s']} |")
    print(f"| {result['new_commit']} (new) | {new['wall_s']} | {new['cpu_s']} |")
    print(f"old / new: wall {result['wall_ratio']}x, CPU {result['cpu_ratio']}x  ({out})")
    if old["exit"] not in (0, 1) or new["exit"] not in (0, 1):
        sys.exit(f"an evaluate failed (exit {old['exit']} / {new['exit']}); see {work}")


if __name__ == "__main__":
    main()
