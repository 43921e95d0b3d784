"""Occlusion of a tiled segmentation: xaimed's patch-incremental engine against whole passes.

Every contender explains the same network, volume, region target, window and fill (0):

- model: MONAI ``UNet`` (3 levels, one residual unit each) with batch norm (``--norm batch``)
  or instance norm (``--norm instance``), seeded random weights (batch-norm statistics from a
  few passes in training mode) on a smooth random volume of ``--size`` (default 192,192,128);
- tiling: ``--patch`` (64) cubes at ``--overlap`` (0.25, MONAI's default), Gaussian blending;
- target: the sum of label 1's logits over its predicted region (the tiled prediction of the
  unoccluded volume); occlusion windows ``--window`` (16) at stride ``--stride`` (16).

Contenders:

- ``xaimed patch-incremental``: xaimed's occlusion, ``engine: auto`` (the tiled model goes
  through :mod:`xaimed.engine.patchwise`: only the patches a window touches are recomputed);
- ``xaimed plain``: ``engine: plain`` (a whole tiled pass per window);
- ``captum``: ``captum.attr.Occlusion`` over a forward that runs MONAI's
  ``SlidingWindowInferer`` (same patch, overlap, Gaussian blending) and reduces the region;
- ``monai``: ``monai.visualize.OcclusionSensitivity`` over the same forward.

Sampling: a full run has (192/16)^2 * 128/16 = 1152 windows, and every contender but xaimed's
patch-incremental engine needs a whole tiled pass (48 UNet patches) per window: hours on two
CPU cores. So every contender is timed on the same sample of ``--sample`` windows spread over
the volume (non-overlapping, so Captum's map holds each window's drop) and its time per
window is extrapolated to the full window count; every extrapolated row says so. Maps are
compared on those windows: the largest difference of the window's score drop to xaimed's plain
engine, relative to the largest drop.

Time per window excludes what a contender does once per case (xaimed's reference pass, which
the patch-incremental engine also uses to record every patch): full run = once-per-case time
+ time per window x window count. Each contender runs in its own child process; peak memory
is the child's ``ru_maxrss`` minus its resident memory before the method ran (the method's
own need).

    .venv/bin/python benchmarks/segmentation.py --norm batch
    .venv/bin/python benchmarks/segmentation.py --norm instance --json out.json
    .venv/bin/python benchmarks/segmentation.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CONTENDERS = ("xaimed patch-incremental", "xaimed plain", "captum", "monai")


def _rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _network(norm: str) -> torch.nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(
        spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32), strides=(2, 2),
        num_res_units=1, norm=norm,
    )  # fmt: skip


def _setup(args):
    from scipy import ndimage

    shape = tuple(int(n) for n in args.size.split(","))
    rng = np.random.default_rng(1)
    data = ndimage.gaussian_filter(rng.normal(size=shape), 3.0)
    data = (data - data.mean()) / data.std()
    device = torch.device(args.device)
    x = torch.from_numpy(data.astype(np.float32))[None, None].to(device)
    net = _network(args.norm)
    if args.norm == "batch":
        net.train()
        with torch.no_grad():
            for k in range(3):
                net(x[:, :, :64, :64, :64] + 0.1 * k)
    return net.eval().to(device), x


def _windows(args, shape) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The sampled windows (lo, hi) and the full run's window count."""
    w, s = args.window, args.stride
    full = math.prod(math.ceil((n - w) / s) + 1 for n in shape)
    # Spread: windows at a step of ``spread`` voxels, as many as --sample asks for.
    spread = max(w, round((math.prod(shape) / args.sample) ** (1 / 3) / s) * s)
    starts = [list(range(0, n - w + 1, spread)) for n in shape]
    lo = torch.tensor([[a, b, c] for a in starts[0] for b in starts[1] for c in starts[2]])
    return lo, lo + w, full


def _region(net, x, args) -> torch.Tensor:
    from xaimed.engine.tiling import TiledInference

    with torch.no_grad():
        out = TiledInference(net, (args.patch,) * 3, overlap=args.overlap)(x)
    return out[0].argmax(0) == 1


def _autocast(args):
    from contextlib import nullcontext

    if args.precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=args.device, dtype=torch.bfloat16)


def _xaimed(net, x, region, lo, hi, args, *, patchwise: bool, timing: dict) -> np.ndarray:
    from xaimed.config import TargetSection
    from xaimed.engine.counting import CountingModel
    from xaimed.engine.targets import CaseRegions, TargetReduction
    from xaimed.engine.tiling import TiledInference
    from xaimed.methods.context import MethodContext
    from xaimed.methods.windows import PlainWindows

    tiled = TiledInference(net, (args.patch,) * 3, overlap=args.overlap)
    spec = TargetSection.model_validate({"region": "predicted", "reduction": "sum"})
    reduction = TargetReduction(tiled, spec, output="logits")
    regions = torch.stack([~region, region])
    voxels = tuple(int(n) for n in regions.flatten(1).sum(-1))
    reduction.use(CaseRegions(segmentation=True, regions=regions, voxels=voxels))
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    counting = CountingModel(reduction, autocast_dtype=dtype)
    ctx = MethodContext(
        model=counting, inputs=x, target=1, seed=0, batch_size=args.batch, device=x.device
    )
    t0 = time.perf_counter()
    engine = PlainWindows(ctx, torch.zeros_like(x), patchwise=patchwise)
    # Once per case, whatever the window count: the reference (and recorded patch) pass.
    timing["setup_s"] = time.perf_counter() - t0
    drops = engine.reference - engine.scores(lo, hi, label="occlusion")
    return drops.double().cpu().numpy()


def _forward(net, region, args):
    from monai.inferers import SlidingWindowInferer

    inferer = SlidingWindowInferer(
        roi_size=args.patch, sw_batch_size=args.batch, overlap=args.overlap, mode="gaussian"
    )
    mask = torch.stack([~region, region]).float()

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with _autocast(args):
            out = inferer(batch, net).float()
        return (out * mask).flatten(2).sum(-1)  # (N, 2): each label's region sum

    return forward


def _captum(net, x, region, lo, hi, args) -> tuple[np.ndarray, int]:
    """Captum's Occlusion only takes a regular grid of windows with stride <= window, so the
    sampled windows go through ``captum.attr.FeatureAblation`` with one feature per window
    (the same whole forward pass per window as Occlusion makes); the rest of the volume is
    feature 0, ablated too and not used."""
    from captum.attr import FeatureAblation

    forward = _forward(net, region, args)
    mask = torch.zeros_like(x, dtype=torch.long)
    for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
        mask[(0, 0, *(slice(s, e) for s, e in zip(a, b, strict=True)))] = i + 1
    with torch.no_grad():
        attr = FeatureAblation(forward).attribute(
            x, baselines=0.0, target=1, feature_mask=mask, perturbations_per_eval=1
        )
    drops = np.array([float(attr[(0, 0, *(int(v) for v in a))]) for a in lo])
    return drops, len(lo) + 1


def _monai(net, x, region, lo, hi, args) -> tuple[np.ndarray, int]:
    """MONAI occludes every window of a grid around ``b_box`` (the box grown by the mask on
    each side), so one sampled window's box costs several occluded passes: they are counted,
    and time is per pass. Its windows are centred on its own grid, not on ours, so its map is
    not compared (NaN)."""
    from monai.visualize import OcclusionSensitivity

    forward = _forward(net, region, args)
    seen = [0]

    def counted(batch: torch.Tensor) -> torch.Tensor:
        seen[0] += int(batch.shape[0])
        return forward(batch)

    occ = OcclusionSensitivity(
        counted, mask_size=args.window, n_batch=args.batch, mode=0.0, overlap=0.0,
        activate=False, verbose=False,
    )  # fmt: skip
    a, b = lo[0].tolist(), hi[0].tolist()
    box = [v for pair in zip(a, (e - 1 for e in b), strict=True) for v in pair]
    with torch.no_grad():
        occ(x, b_box=box)
    return np.full(len(lo), np.nan), seen[0]


def child(args) -> None:
    torch.set_num_threads(args.threads)
    net, x = _setup(args)
    region = _region(net, x, args)
    lo, hi, _ = _windows(args, tuple(x.shape[2:]))
    before = _rss()
    t0 = time.perf_counter()
    # ``passes``: the occluded inputs the timing covers (time per window = wall / passes).
    timing = {"setup_s": 0.0}
    if args.child == "xaimed patch-incremental":
        drops = _xaimed(net, x, region, lo, hi, args, patchwise=True, timing=timing)
        passes = len(lo)
    elif args.child == "xaimed plain":
        drops = _xaimed(net, x, region, lo, hi, args, patchwise=False, timing=timing)
        passes = len(lo)
    elif args.child == "captum":
        drops, passes = _captum(net, x, region, lo, hi, args)
    else:
        drops, passes = _monai(net, x, region, lo, hi, args)
    if args.device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    device_peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else 0
    Path(args.out).write_text(
        json.dumps(
            {
                "wall_s": wall,
                "setup_s": timing["setup_s"],
                "windows": passes,
                "method_mib": (peak - before) / 2**20,
                "device_mib": device_peak / 2**20,
                "drops": [None if np.isnan(v) else float(v) for v in drops],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--norm", choices=("batch", "instance"), default="batch")
    parser.add_argument("--size", default="192,192,128")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--sample", type=int, default=8, help="windows timed per contender")
    parser.add_argument("--batch", type=int, default=4, help="inputs / patches per call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--only", default=",".join(CONTENDERS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    shape = tuple(int(n) for n in args.size.split(","))
    _, _, full = _windows(args, shape)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [n for n in CONTENDERS if n in args.only.split(",")]:
            out = Path(tmp) / "out.json"
            argv = [sys.executable, __file__, "--child", name, "--out", str(out)]
            for key in ("norm", "size", "patch", "overlap", "window", "stride", "sample"):
                argv += [f"--{key}", str(getattr(args, key))]
            argv += ["--batch", str(args.batch), "--threads", str(args.threads)]
            argv += ["--device", args.device, "--precision", args.precision]
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            got = json.loads(out.read_text())
            setup = got.get("setup_s", 0.0)
            got["per_window_s"] = (got["wall_s"] - setup) / got["windows"]
            got["drops"] = [float("nan") if v is None else v for v in got["drops"]]
            got["full_run_s"] = setup + got["per_window_s"] * full
            results[name] = got
            print(
                f"{name}: {got['wall_s']:.1f} s for {got['windows']} windows "
                f"({setup:.1f} s of it once per case)",
                flush=True,
            )
    reference = results.get("xaimed plain")
    scale = max(abs(v) for v in reference["drops"]) if reference else 1.0
    peers = [results[n]["full_run_s"] for n in ("captum", "monai") if n in results]
    best_peer = min(peers) if peers else float("nan")
    rows = []
    for name, got in results.items():
        diff = (
            float(np.max(np.abs(np.subtract(got["drops"], reference["drops"])))) / scale
            if reference
            else float("nan")
        )
        corr = (
            float(np.corrcoef(got["drops"], reference["drops"])[0, 1])
            if reference and len(got["drops"]) > 1
            else float("nan")
        )
        rows.append(
            {
                "contender": name,
                "full_run_s": round(got["full_run_s"], 1),
                "extrapolated_from_windows": got["windows"],
                "speedup_vs_best_peer": round(best_peer / got["full_run_s"], 2),
                "method_mib": round(got["method_mib"], 1),
                "device_mib": round(got["device_mib"], 1),
                "largest_drop_difference": diff,
                "correlation": corr,
            }
        )
    header = (
        f"{'contender':26} {'full run (s, extrap.)':>22} {'x best peer':>12} {'MiB':>8} "
        f"{'max diff':>10}"
    )
    print(
        f"\n{args.norm}-norm UNet, {args.size}, patch {args.patch}^3 overlap {args.overlap}, "
        f"window {args.window} stride {args.stride}: {full} windows; "
        f"{args.device} {args.precision}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['contender']:26} {r['full_run_s']:>22.1f} {r['speedup_vs_best_peer']:>12.2f} "
            f"{r['method_mib']:>8.1f} {r['largest_drop_difference']:>10.2e}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {"settings": vars(args), "full_windows": full, "rows": rows}
        args.json.write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
