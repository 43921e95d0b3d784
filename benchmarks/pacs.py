"""A cohort pulled from a DICOM server and stored back, against the same cohort from a folder.

Builds ``--studies`` DICOM studies (the sample study's phantoms, cycled, each exported as its own
study with its own UIDs), starts a real Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) on
free loopback ports and uploads them, then runs the same ``xaimed explain`` command twice, one
after the other, each in its own process:

- ``folder``: the studies read from the export folder (no server);
- ``pacs``: INPUT ``pacs:`` (every study on the server), retrieved over ``--protocol`` (DICOMweb,
  or DIMSE C-GET / C-MOVE) and the Parametric Map and Secondary Captures stored back into each
  study (``outputs.store``).

It reports both runs' wall times, the pacs run's throughput relative to the folder run, and per
study the retrieval, explanation and store times (from the run's log and manifest), checks that
both runs wrote byte-identical maps, and writes the numbers to ``benchmarks/results/``.

    .venv/bin/python benchmarks/pacs.py --studies 20
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from orthanc_server import PASSWORD, USER, Orthanc  # noqa: E402

from xaimed.io.dicom.export import export_series  # noqa: E402
from xaimed.io.nifti import read_nifti  # noqa: E402


def make_studies(folder: Path, count: int) -> list[Path]:
    """``count`` studies from the sample images, cycled, each with UIDs of its own."""
    images = sorted((ROOT / "sample_data" / "images").glob("case*.nii.gz"))
    files: list[Path] = []
    for i in range(count):
        volume = read_nifti(images[i % len(images)])
        files += export_series(
            volume, folder / f"study{i:03d}", uid_seed=f"xaimed-benchmark-{i}",
            patient_id=f"BENCH{i:03d}", modality="MR", series_description="benchmark phantom",
        )  # fmt: skip
    return files


def run(input_path: str, config: Path, out: Path) -> float:
    """Wall time of one ``xaimed explain`` in its own process."""
    t0 = time.perf_counter()
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "xaimed"), "explain", input_path, "-c", str(config), "-o",
         str(out)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - t0


def per_study(out: Path) -> list[dict[str, float]]:
    """Retrieve, explain and store seconds of each case of a pacs run."""
    log = "\n".join(p.read_text() for p in (out / "logs").glob("*.log"))
    retrieve = {
        m[1]: float(m[2]) for m in re.finditer(r"case (\S+): study retrieved in ([\d.]+) s", log)
    }
    store: dict[str, float] = {}
    for m in re.finditer(r"case (\S+): series \S+: \d+ instance\(s\) stored.*\(([\d.]+) s\)", log):
        store[m[1]] = store.get(m[1], 0.0) + float(m[2])
    explain: dict[str, float] = {}
    with (out / "manifest.csv").open() as fh:
        for row in csv.DictReader(fh):
            explain[row["case_id"]] = explain.get(row["case_id"], 0.0) + float(row["wall_s"] or 0)
    return [{"case_id": c, "retrieve_s": retrieve.get(c, 0.0), "explain_s": explain[c],
             "store_s": store.get(c, 0.0)} for c in sorted(explain)]  # fmt: skip


def map_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*/*.nii.gz")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--protocol", choices=["dicomweb", "get", "move"], default="dicomweb")
    parser.add_argument("--methods", default="saliency,grad_cam,integrated_gradients")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = make_studies(work / "export", args.studies)
        orthanc = Orthanc(work / "orthanc")
        try:
            orthanc.upload(files)
            base = yaml.safe_load((ROOT / "configs" / "sample.yaml").read_text())
            base["model"]["weights"] = str(ROOT / "xaimed" / "sample" / "sample_cnn_state.pt")
            base["methods"] = [{"name": m} for m in args.methods.split(",")]
            base["runtime"] = {"device": "cpu", "seed": 0}
            (work / "folder.yaml").write_text(yaml.safe_dump(base))
            server = (
                orthanc.dicomweb() if args.protocol == "dicomweb" else orthanc.dimse(args.protocol)
            )
            pacs = base | {"pacs": {"server": server}}
            pacs["outputs"] = {"store": {"server": "source"}}
            (work / "pacs.yaml").write_text(yaml.safe_dump(pacs))
            os.environ["XAIMED_PACS_USERNAME"], os.environ["XAIMED_PACS_PASSWORD"] = USER, PASSWORD
            before = orthanc.count()
            folder_s = run(str(work / "export"), work / "folder.yaml", work / "out-folder")
            pacs_s = run("pacs:", work / "pacs.yaml", work / "out-pacs")
            stored = orthanc.count() - before
            studies = per_study(work / "out-pacs")
            identical = map_digests(work / "out-folder") == map_digests(work / "out-pacs")
        finally:
            orthanc.stop()
    mean = {
        k: statistics.mean(s[k] for s in studies) for k in ("retrieve_s", "explain_s", "store_s")
    }
    result = {
        "studies": args.studies, "protocol": args.protocol, "methods": args.methods.split(","),
        "folder_wall_s": round(folder_s, 2), "pacs_wall_s": round(pacs_s, 2),
        "throughput_vs_folder": round(folder_s / pacs_s, 3), "instances_stored": stored,
        "maps_identical": identical, "mean_per_study_s": {k: round(v, 3) for k, v in mean.items()},
        "per_study": studies, "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"pacs_{args.studies}_{args.protocol}_cpu{os.cpu_count()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(
        "| run | wall s | throughput vs folder |\n|---|---:|---:|\n"
        f"| folder | {folder_s:.1f} | 1.00 |"
    )
    print(f"| pacs ({args.protocol}, store back) | {pacs_s:.1f} | {folder_s / pacs_s:.2f} |")
    print(
        f"per study (mean): retrieve {mean['retrieve_s']:.2f} s, "
        f"explain {mean['explain_s']:.2f} s, "
        f"store {mean['store_s']:.2f} s; {stored} instances stored; maps identical: {identical}"
    )
    print(f"raw numbers: {path}")


if __name__ == "__main__":
    main()
