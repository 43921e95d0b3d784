"""Occlusion of a tiled segmentation: xaimed's incremental engines against whole passes.

Every contender explains the same network, volume, region target, window and fill (0):

- model: MONAI ``UNet`` (3 levels, one residual unit each) with batch norm (``--norm batch``)
  or instance norm (``--norm instance``), seeded random weights (batch-norm statistics from a
  few passes in training mode) on a smooth random volume of ``--size`` (default 192,192,128);
- tiling: ``--patch`` (64) cubes at ``--overlap`` (0.25, MONAI's default), Gaussian blending;
- target: the sum of label 1's logits over its predicted region (the tiled prediction of the
  unoccluded volume); occlusion windows ``--window`` (16) at stride ``--stride`` (16).

Contenders:

- ``xaimed incremental``: the incremental engine inside every patch
  (:mod:`xaimed.engine.incremental.tiled`, exact), what ``engine: auto`` runs;
- ``xaimed frozen-norm``: the same with ``approximate: {freeze_norm_statistics: true}``
  (instance norm only); its map is compared with the exact engine's (Pearson, Spearman, the
  largest difference relative to the largest exact drop);
- ``xaimed patch-incremental``: whole touched patches recomputed (:mod:`xaimed.engine.patchwise`);
- ``xaimed plain``: ``engine: plain`` (a whole tiled pass per window);
- ``captum``: ``captum.attr.FeatureAblation`` (one feature per window) over a forward that runs
  MONAI's ``SlidingWindowInferer`` (same patch, overlap, Gaussian blending) and reduces the
  region;
- ``monai``: ``monai.visualize.OcclusionSensitivity`` over the same forward, one window per
  call (``b_box`` at the window's centre voxel).

Sampling: a full run has (192/16)^2 * 128/16 = 1152 windows, and the whole-pass contenders need
a tiled pass (48 UNet patches) per window: hours on two CPU cores. So whole-pass contenders are
timed on ``--sample`` windows drawn at random from the grid, the partial-pass engines on
``--patch-sample`` (the same first ones) plus, with ``--block``, a cube of adjacent windows,
and every contender's time per window is extrapolated to the full window count; every
extrapolated row says so. Full run = once-per-case time (the reference pass; for the
incremental engines the recording of every patch, and the re-recording of the patches the
sample touches is moved there from the windows' time) + time per window x window count. Drops
are compared on the windows two contenders share. Each contender runs in its own child process;
peak memory is the child's ``ru_maxrss`` minus its resident memory before the method ran.

    .venv/bin/python benchmarks/segmentation.py --norm batch
    .venv/bin/python benchmarks/segmentation.py --norm instance --block 4 --json out.json
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

CONTENDERS = (
    "xaimed incremental",
    "xaimed frozen-norm",
    "xaimed patch-incremental",
    "xaimed plain",
    "captum",
    "monai",
)
# Contenders that compute only part of a pass per window, timed on the larger sample.
PARTIAL = ("xaimed incremental", "xaimed frozen-norm", "xaimed patch-incremental")


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


def _windows(args, shape, count: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``count`` windows (lo, hi) drawn at random (seeded) from the full run's grid, and the
    full run's window count. A smaller count gives the first windows of a larger one."""
    from xaimed.methods.windows import boxes_of

    w, s = (args.window,) * 3, (args.stride,) * 3
    lo, hi = boxes_of(shape, w, s)  # type: ignore[arg-type]
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(lo)))[:count]
    return lo[order], hi[order], len(lo)


def _block(args, shape, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampled windows and a cube of ``--block``^3 adjacent windows of the grid (at a
    seeded random place). The incremental engine works patch by patch: adjacent windows share
    their patches as in a full run (about 57 windows per patch), where scattered ones would
    pay each patch's fixed costs for one or two windows."""
    from xaimed.methods.windows import boxes_of

    w, s, n = (args.window,) * 3, (args.stride,) * 3, args.block
    grid, _ = boxes_of(shape, w, s)  # type: ignore[arg-type]
    corner = grid[int(np.random.default_rng(1).integers(len(grid)))]
    starts = torch.tensor(
        [[min(int(c) + i * args.stride, m - args.window) for c, i, m in
          zip(corner, idx, shape, strict=True)]
         for idx in np.ndindex(n, n, n)]
    )  # fmt: skip
    starts = torch.unique(torch.cat([lo, starts]), dim=0)
    return starts, starts + torch.tensor(w)


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
    from xaimed.methods.windows import PlainWindows

    ctx = _context(net, x, region, args)
    t0 = time.perf_counter()
    engine = PlainWindows(ctx, torch.zeros_like(x), patchwise=patchwise)
    # Once per case, whatever the window count: the reference (and recorded patch) pass.
    timing["setup_s"] = time.perf_counter() - t0
    drops = engine.reference - engine.scores(lo, hi, label="occlusion")
    return drops.double().cpu().numpy()


def _xaimed_incremental(net, x, region, lo, hi, args, *, freeze: bool, timing: dict):
    """The incremental engine inside the patches. Once per case: recording every patch (the
    reference); a sample of windows re-records the patches it touches (a full run records each
    once, with the reference), so that share is moved from the windows' time to the setup."""
    from xaimed.methods.windows import TiledIncrementalWindows

    ctx = _context(net, x, region, args)
    t0 = time.perf_counter()
    engine = TiledIncrementalWindows(ctx, torch.zeros_like(x), 1.0, freeze)
    reference = engine.reference
    timing["setup_s"] = time.perf_counter() - t0
    scorer = engine.scorer
    patches = len(scorer.plan.boxes)
    t1 = time.perf_counter()
    scores = engine.scores(lo, hi, label="occlusion")
    again = scorer.patches_recorded - patches
    timing["windows_s"] = time.perf_counter() - t1 - again * timing["setup_s"] / patches
    timing["record"] = scorer.sidecar_fields()
    return (reference - scores).double().cpu().numpy()


def _context(net, x, region, args):
    from xaimed.config import TargetSection
    from xaimed.engine.counting import CountingModel
    from xaimed.engine.targets import CaseRegions, TargetReduction
    from xaimed.engine.tiling import TiledInference
    from xaimed.methods.context import MethodContext

    tiled = TiledInference(net, (args.patch,) * 3, overlap=args.overlap)
    spec = TargetSection.model_validate({"region": "predicted", "reduction": "sum"})
    reduction = TargetReduction(tiled, spec, output="logits")
    regions = torch.stack([~region, region])
    voxels = tuple(int(n) for n in regions.flatten(1).sum(-1))
    reduction.use(CaseRegions(segmentation=True, regions=regions, voxels=voxels))
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    counting = CountingModel(reduction, autocast_dtype=dtype)
    return MethodContext(
        model=counting, inputs=x, target=1, seed=0, batch_size=args.batch, device=x.device
    )


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


def _monai(net, x, region, lo, hi, args, timing: dict) -> tuple[np.ndarray, int]:
    """MONAI occludes every window of its grid (mask size, overlap 0: our grid) that meets
    ``b_box`` grown by half the mask on each side; a ``b_box`` of the window's centre voxel
    gives that one window, one occluded pass. Its map there is the occluded score; the drop is
    the reference (one pass, once per case) minus it."""
    from monai.visualize import OcclusionSensitivity

    forward = _forward(net, region, args)
    t0 = time.perf_counter()
    with torch.no_grad():
        reference = float(forward(x)[0, 1])
    timing["setup_s"] = time.perf_counter() - t0
    seen = [0]

    def counted(batch: torch.Tensor) -> torch.Tensor:
        seen[0] += int(batch.shape[0])
        return forward(batch)

    occ = OcclusionSensitivity(
        counted, mask_size=args.window, n_batch=args.batch, mode=0.0, overlap=0.0,
        activate=False, verbose=False,
    )  # fmt: skip
    drops = []
    for a in lo.tolist():
        centre = [v + args.window // 2 for v in a]
        box = [v for c in centre for v in (c, c + 1)]
        with torch.no_grad():
            occ_map, _ = occ(x, b_box=box)
        drops.append(reference - float(occ_map.flatten(2)[0, 1, 0]))
    return np.array(drops), seen[0]


def child(args) -> None:
    torch.set_num_threads(args.threads)
    net, x = _setup(args)
    region = _region(net, x, args)
    count = args.patch_sample if args.child in PARTIAL else args.sample
    lo, hi, _ = _windows(args, tuple(x.shape[2:]), count)
    if args.child in PARTIAL and args.block:
        lo, hi = _block(args, tuple(x.shape[2:]), lo, hi)
    before = _rss()
    t0 = time.perf_counter()
    # ``passes``: the occluded inputs the timing covers (time per window = wall / passes).
    timing: dict = {"setup_s": 0.0}
    if args.child in ("xaimed incremental", "xaimed frozen-norm"):
        freeze = args.child == "xaimed frozen-norm"
        drops = _xaimed_incremental(net, x, region, lo, hi, args, freeze=freeze, timing=timing)
        passes = len(lo)
    elif args.child == "xaimed patch-incremental":
        drops = _xaimed(net, x, region, lo, hi, args, patchwise=True, timing=timing)
        passes = len(lo)
    elif args.child == "xaimed plain":
        drops = _xaimed(net, x, region, lo, hi, args, patchwise=False, timing=timing)
        passes = len(lo)
    elif args.child == "captum":
        drops, passes = _captum(net, x, region, lo, hi, args)
    else:
        drops, passes = _monai(net, x, region, lo, hi, args, timing)
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
                "windows_s": timing.get("windows_s", wall - timing["setup_s"]),
                "windows": passes,
                "starts": lo.tolist(),
                "method_mib": (peak - before) / 2**20,
                "device_mib": device_peak / 2**20,
                "drops": [None if np.isnan(v) else float(v) for v in drops],
                "record": timing.get("record"),
            },
            default=str,
        )
    )


def _compare(got: dict, ref: dict) -> dict:
    """Drops of ``got`` against ``ref`` on the windows both ran: largest difference relative
    to the largest reference drop, Pearson and Spearman correlation."""
    from scipy import stats

    theirs = {tuple(k): v for k, v in zip(ref["starts"], ref["drops"], strict=True)}
    pairs = [
        (v, theirs[tuple(k)])
        for k, v in zip(got["starts"], got["drops"], strict=True)
        if tuple(k) in theirs and not math.isnan(v) and not math.isnan(theirs[tuple(k)])
    ]
    if not pairs:
        return {"windows": 0}
    ours, base = np.array(pairs).T
    scale = float(np.max(np.abs(base))) or 1.0
    out = {"windows": len(pairs), "max_diff": float(np.max(np.abs(ours - base))) / scale}
    if len(pairs) > 2:
        out["pearson"] = float(np.corrcoef(ours, base)[0, 1])
        out["spearman"] = float(stats.spearmanr(ours, base).statistic)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--norm", choices=("batch", "instance"), default="batch")
    parser.add_argument("--size", default="192,192,128")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument(
        "--sample", type=int, default=4, help="windows timed per whole-pass contender"
    )
    parser.add_argument(
        "--patch-sample", type=int, default=48,
        help="windows timed per xaimed engine that computes part of a pass (a superset)",
    )  # fmt: skip
    parser.add_argument(
        "--block", type=int, default=0,
        help="also time the partial-pass engines on a cube of this many adjacent windows a side",
    )  # fmt: skip
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
    full = math.prod(math.ceil((n - args.window) / args.stride) + 1 for n in shape)
    names = [n for n in CONTENDERS if n in args.only.split(",")]
    if args.norm == "batch" and "xaimed frozen-norm" in names:
        names.remove("xaimed frozen-norm")  # batch norm has no per-sample statistics
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out = Path(tmp) / "out.json"
            argv = [sys.executable, __file__, "--child", name, "--out", str(out)]
            for key in ("norm", "size", "patch", "overlap", "window", "stride", "sample"):
                argv += [f"--{key}", str(getattr(args, key))]
            argv += ["--patch-sample", str(args.patch_sample), "--block", str(args.block)]
            argv += ["--batch", str(args.batch), "--threads", str(args.threads)]
            argv += ["--device", args.device, "--precision", args.precision]
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            got = json.loads(out.read_text())
            setup = got.get("setup_s", 0.0)
            got["per_window_s"] = got["windows_s"] / got["windows"]
            got["drops"] = [float("nan") if v is None else v for v in got["drops"]]
            got["full_run_s"] = setup + got["per_window_s"] * full
            results[name] = got
            print(
                f"{name}: {got['wall_s']:.1f} s for {got['windows']} windows "
                f"({setup:.1f} s of it once per case; {got['per_window_s']:.2f} s per window)",
                flush=True,
            )
    peers = [results[n]["full_run_s"] for n in ("captum", "monai") if n in results]
    best_peer = min(peers) if peers else float("nan")
    rows = []
    for name, got in results.items():
        row = {
            "contender": name,
            "full_run_s": round(got["full_run_s"], 1),
            "setup_s": round(got["setup_s"], 1),
            "per_window_s": round(got["per_window_s"], 3),
            "extrapolated_from_windows": got["windows"],
            "speedup_vs_best_peer": round(best_peer / got["full_run_s"], 2),
            "method_mib": round(got["method_mib"], 1),
            "device_mib": round(got["device_mib"], 1),
            "vs_xaimed_plain": _compare(got, results["xaimed plain"])
            if "xaimed plain" in results
            else None,
            "engine_record": got.get("record"),
        }
        if name == "xaimed frozen-norm" and "xaimed incremental" in results:
            row["vs_exact_incremental"] = _compare(got, results["xaimed incremental"])
        rows.append(row)
    print(
        f"\n{args.norm}-norm UNet, {args.size}, patch {args.patch}^3 overlap {args.overlap}, "
        f"window {args.window} stride {args.stride}: {full} windows; "
        f"{args.device} {args.precision}"
    )
    print(
        f"{'contender':26} {'full run (s, extrap.)':>22} {'from':>5} {'x best peer':>12} "
        f"{'MiB':>8} {'max diff':>10} {'vs exact':>26}"
    )
    nan = float("nan")
    for r in rows:
        diff = (r["vs_xaimed_plain"] or {}).get("max_diff", float("nan"))
        exact = r.get("vs_exact_incremental")
        quality = (
            f"r={exact.get('pearson', nan):.3f} rho={exact.get('spearman', nan):.3f} "
            f"d={exact['max_diff']:.2e}"
            if exact and exact["windows"]
            else ""
        )
        print(
            f"{r['contender']:26} {r['full_run_s']:>22.1f} {r['extrapolated_from_windows']:>5} "
            f"{r['speedup_vs_best_peer']:>12.2f} {r['method_mib']:>8.1f} {diff:>10.2e} "
            f"{quality:>26}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {"settings": vars(args), "full_windows": full, "rows": rows}
        args.json.write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
