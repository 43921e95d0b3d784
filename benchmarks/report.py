"""Size and build time of the HTML report, per case, for the README.

Two runs, each a real run folder (manifest, sidecars, maps, PNGs):

- ``sample``: ``xaimed explain`` of the six bundled sample cases (48^3, 4 mm) with
  ``configs/sample.yaml`` (11 methods), then ``xaimed report``;
- ``large``: a synthetic run of ``--cases`` cases of a clinical-size grid (``--shape``, default
  256 x 256 x 160, float32 source and five smooth signed float32 maps, written as xaimed writes
  them); its report is built at the default ``report.max_size`` (128: stride 2) and at full
  size (``max_size`` = the largest axis: no subsampling), to show what subsampling saves.

``--browser``: the index of synthetic runs of 500 and 5,000 cases × 5 methods (manifest rows and
a metric, no files) in headless Chromium (as the browser tests start it): time to open the
page until its grid is drawn, and to filter by status and sort by the metric; the 5,000-case
times are also given against the 500-case ones (a grid that drew every case would take ten
times as long).

Printed per run: cases, maps, report bytes in all and per case, the share that is the viewer's
volumes, the fixed share (NiiVue and the pages) and the build time per case. Sizes are exact;
times are of this machine, reported against the same run's other settings.

    .venv/bin/python benchmarks/report.py [--skip-sample] [--cases 3] [--shape 256,256,160]
        [--browser]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

ROOT = Path(__file__).resolve().parent.parent


def sample_run(tmp: Path) -> Path:
    run = tmp / "sample"
    command = Path(sys.executable).parent / "xaimed"
    subprocess.run(
        [str(command), "explain", str(ROOT / "sample_data" / "images"), "--config",
         str(ROOT / "configs" / "sample.yaml"), "--out", str(run), "-q"],
        check=True,
    )  # fmt: skip
    return run


def large_run(tmp: Path, cases: int, shape: tuple[int, int, int]) -> Path:
    run = tmp / "large"
    rng = np.random.default_rng(0)
    affine = np.diag([0.9, 0.9, 1.2, 1.0])
    rows = []
    for c in range(cases):
        case_id = f"large{c:02d}"
        folder = run / case_id
        folder.mkdir(parents=True)
        source = gaussian_filter(rng.normal(0, 1, shape), 3).astype(np.float32) * 400 + 300
        nib.save(nib.Nifti1Image(source, affine), str(tmp / f"{case_id}.nii.gz"))
        for m in range(5):
            attribution = gaussian_filter(rng.normal(0, 1, shape), 2 + m).astype(np.float32)
            path = folder / f"{case_id}_method{m}.nii.gz"
            nib.save(nib.Nifti1Image(attribution, affine), str(path))
            rows.append({
                "case_id": case_id, "case_index": c, "source": str(tmp / f"{case_id}.nii.gz"),
                "method": f"method{m}", "target": "lesion", "status": "ok", "nifti": str(path),
                "wall_s": "1.0", "predicted_class": "lesion", "probability": "0.9",
            })  # fmt: skip
    with (run / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (run / "config.json").write_text(json.dumps({"outputs": {"report": True}}))
    return run


def measure(name: str, run: Path, out: Path, max_size: int | None = None) -> dict:
    from xaimed.report import build_report

    start = time.perf_counter()
    result = build_report(run, out, max_size=max_size)
    seconds = time.perf_counter() - start
    fixed = sum(p.stat().st_size for p in (out / "assets").rglob("*") if p.is_file())
    fixed += sum((out / page).stat().st_size for page in ("index.html", "case.html"))
    maps = sum(1 for _ in csv.DictReader((run / "manifest.csv").open()))
    return {
        "run": name, "cases": result.cases, "maps": maps, "MiB": result.bytes_total / 2**20,
        "MiB/case": result.bytes_per_case / 2**20,
        "volumes MiB/case": result.bytes_volumes / result.cases / 2**20,
        "fixed MiB": fixed / 2**20, "s/case": seconds / result.cases,
    }  # fmt: skip


def index_run(folder: Path, cases: int, methods: int = 5) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    with (
        (folder / "manifest.csv").open("w", newline="") as fh,
        (folder / "metrics.csv").open("w", newline="") as mh,
    ):
        rows, metrics = csv.writer(fh), csv.writer(mh)
        rows.writerow(["case_id", "case_index", "method", "target", "status", "error_type",
                       "error", "wall_s", "predicted_class", "probability"])  # fmt: skip
        metrics.writerow(["case_id", "method", "target", "metric", "value", "detail"])
        for c in range(cases):
            failed = c % 50 == 7
            for m in range(methods):
                rows.writerow([f"sub-{c:05d}", c, f"method{m}", "lesion",
                               "failed" if failed else "ok", "InputError" if failed else "",
                               "unreadable." if failed else "", "1.0", "lesion",
                               f"{rng.random():.4f}"])  # fmt: skip
                metrics.writerow(
                    [f"sub-{c:05d}", f"method{m}", "lesion", "auroc", rng.random(), ""]
                )
    return folder


def browser_times(tmp: Path) -> list[dict]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from xaimed.report import build_report

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-sync",
        "--disable-component-update",
        f"--user-data-dir={tmp / 'profile'}",
    ):
        options.add_argument(flag)  # fmt: skip
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    out = []
    try:
        for cases in (500, 5000):
            index = build_report(index_run(tmp / f"index{cases}", cases)).index
            driver.get("about:blank")
            start = time.perf_counter()
            driver.get(index.as_uri())
            WebDriverWait(driver, 60).until(
                lambda d: d.execute_script("return document.body.dataset.ready")
            )
            opened = time.perf_counter() - start
            start = time.perf_counter()
            Select(driver.find_element("id", "f-status")).select_by_value("failed")
            Select(driver.find_element("id", "sort")).select_by_visible_text("metric: auroc")
            driver.find_element("css selector", "#grid tbody tr")
            filtered = time.perf_counter() - start
            out.append({"cases": cases, "open s": opened, "filter+sort s": filtered})
    finally:
        driver.quit()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-sample", action="store_true", help="only the synthetic run")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--shape", default="256,256,160")
    parser.add_argument("--browser", action="store_true", help="also time the index page")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    results = []
    with tempfile.TemporaryDirectory(prefix="xaimed-report-bench-") as folder:
        tmp = Path(folder)
        if not args.skip_sample:
            results.append(measure("sample, 11 methods", sample_run(tmp), tmp / "r-sample"))
        run = large_run(tmp, args.cases, shape)
        label = "x".join(map(str, shape))
        results.append(measure(f"{label}, 5 methods", run, tmp / "r-large"))
        results.append(
            measure(f"{label}, 5 methods, full size", run, tmp / "r-full", max_size=max(shape))
        )
        shutil.rmtree(tmp / "r-full", ignore_errors=True)
        pages = browser_times(tmp) if args.browser else []
    keys = list(results[0])
    print(" | ".join(keys))
    for r in results:
        print(" | ".join(f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    if len(results) >= 2:
        ratio = results[-2]["volumes MiB/case"] / results[-1]["volumes MiB/case"]
        print(f"subsampled (max_size 128) / full-size volumes per case: {ratio:.3f}")
    for p in pages:
        print(f"index of {p['cases']} cases x 5 methods: opened in {p['open s']:.2f} s, "
              f"filtered and sorted in {p['filter+sort s']:.2f} s")  # fmt: skip
    if len(pages) == 2:
        print(
            f"5000 / 500 cases: open {pages[1]['open s'] / pages[0]['open s']:.2f}x, "
            f"filter+sort {pages[1]['filter+sort s'] / pages[0]['filter+sort s']:.2f}x"
        )


if __name__ == "__main__":
    main()
