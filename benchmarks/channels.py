"""Memory of reading a multi-sequence case, as ratios to the stacked array it produces.

Four gzipped NIfTI channels of N^3 voxels, two of them on a coarser, shifted grid (resampled onto
the first): the peak Python/numpy memory (tracemalloc) of ``read_case`` next to the size of
the stack it returns and of one channel, and the peak of the field-of-view coverage next to
the resampling it comes with (both computed for each resampled channel). Ratios, so that the
numbers mean the same on any machine.

usage: .venv/bin/python benchmarks/channels.py [--size N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

from xaimed.config import load_config
from xaimed.io.case import Case, ChannelFile
from xaimed.io.channels import _coverage, _resample_onto
from xaimed.io.read import read_case

NAMES = ["t1", "t1ce", "t2", "flair"]


def _peak(call):  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    n = args.size
    rng = np.random.default_rng(0)
    coarse = np.diag([1.25, 1.25, 1.5, 1.0])
    coarse[:3, 3] = [-2.0, -3.0, 4.0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = []
        for index, name in enumerate(NAMES):
            affine = np.eye(4) if index < 2 else coarse
            shape = (n, n, n) if index < 2 else (int(n / 1.25), int(n / 1.25), int(n / 1.5))
            data = rng.normal(100, 20, shape).astype(np.float32)
            path = folder / f"{name}.nii.gz"
            nib.save(nib.Nifti1Image(data, affine), path)
            files.append(path)
        config = {
            "model": {"torchscript": str(folder / "m.pt"), "in_channels": 4},
            "preprocessing": {"channels": {"names": NAMES, "resample_to": "t1"}},
            "methods": ["saliency"],
        }
        (folder / "c.yaml").write_text(yaml.safe_dump(config))
        loaded = load_config(folder / "c.yaml", check_files=False)
        case = Case("bench", files[0], format=None, channels=tuple(
            ChannelFile(name, path) for name, path in zip(NAMES, files, strict=True)))  # fmt: skip
        one_read, read_one_peak = _peak(lambda: read_case(Case("x", files[2], format=None), loaded))
        base = read_case(Case("x", files[0], format=None), loaded)
        _, coverage_peak = _peak(lambda: _coverage(one_read, base))
        _, resample_peak = _peak(lambda: _resample_onto(one_read, base))
        stacked, case_peak = _peak(lambda: read_case(case, loaded))
    stack_bytes = stacked.array.nbytes
    channel_bytes = base.array.nbytes
    result = {
        "size": n,
        "stack_bytes": stack_bytes,
        "read_case_peak_over_stack": round(case_peak / stack_bytes, 3),
        "read_case_peak_over_one_channel": round(case_peak / channel_bytes, 3),
        "reading_one_channel_peak_over_one_channel": round(read_one_peak / channel_bytes, 3),
        "coverage_peak_bytes_per_voxel": round(coverage_peak / base.array.size, 4),
        "coverage_peak_over_resampling_peak": round(coverage_peak / resample_peak, 4),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
