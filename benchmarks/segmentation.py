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
  (instance norm only: frozen statistics with the first-order correction for their shift,
  :mod:`xaimed.engine.incremental.normshift`); its map is compared with the exact engine's
  (Pearson, Spearman, the largest difference relative to the largest exact drop);
- ``xaimed patch-incremental``: whole touched patches recomputed (:mod:`xaimed.engine.patchwise`);
- ``xaimed plain``: ``engine: plain`` (a whole tiled pass per window);
- ``captum``: ``captum.attr.FeatureAblation`` (one feature per window) over a forward that runs
  MONAI's ``sliding_window_inference`` (same patch, overlap and patch starts, given xaimed's
  Gaussian blending weights: MONAI's own floors the weights' product, xaimed's each axis) and
  reduces the region;
- ``monai``: ``monai.visualize.OcclusionSensitivity`` over the same forward, one window per
  call (``b_box`` at the window's centre voxel).

Sampling: a full run has (192/16)^2 * 128/16 = 1152 windows, and the whole-pass contenders need
a tiled pass (48 UNet patches) per window: hours on two CPU cores. So whole-pass contenders are
timed on ``--sample`` windows drawn at random from the grid, the partial-pass engines on
``--patch-sample`` (the same first ones) plus, with ``--block``, a cube of adjacent windows
(adjacent, because those engines work patch by patch and a full run gives each patch about 57
windows), and every contender's time per window is extrapolated to the full window count;
every extrapolated row says so. Full run, whole-pass contenders: once-per-case time (the
reference pass) + time per window x window count (Captum's call also runs the reference and
the rest of the volume as a feature: its time per window is its time per pass). Full run,
partial-pass engines: every patch recorded once (a full run records each patch once, with its
windows; the measured time per recorded patch, the frozen statistics' backward pass included)
+ the windows' own time per window x window count. Drops are compared on the windows two
contenders share.

Fair timing on a shared machine: every contender runs in its own persistent worker process;
the workers set up one after another, then run ``--rounds`` interleaved rounds (in each, every
contender in turn runs one unit: a partial-pass engine its whole sample again, a whole-pass
contender the next of its sampled windows), so that a change of the machine's load hits every
contender alike; times are summed over the rounds. Peak memory is the worker's ``ru_maxrss``
minus its resident memory before the method ran.

    .venv/bin/python benchmarks/segmentation.py --norm batch
    .venv/bin/python benchmarks/segmentation.py --norm instance --sample 3 --rounds 3 \
        --patch-sample 3 --block 4 --only 'xaimed incremental,xaimed frozen-norm,captum,monai'
    .venv/bin/python benchmarks/segmentation.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
    from monai.inferers import sliding_window_inference

    from xaimed.engine.tiling import blend_weights

    # xaimed's Gaussian weights (floored per axis) through MONAI's public ``roi_weight_map``:
    # with MONAI's own (floored on the product) the peers explain another blend, 3-4 % of the
    # largest drop apart. Patches, overlap, sigma and aggregation are MONAI's.
    weights = blend_weights((args.patch,) * 3, "gaussian", torch.device(args.device))

    def inferer(batch: torch.Tensor, model) -> torch.Tensor:
        return sliding_window_inference(
            batch, args.patch, args.batch, model, overlap=args.overlap, mode="gaussian",
            roi_weight_map=weights,
        )  # fmt: skip

    mask = torch.stack([~region, region]).float()

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with _autocast(args):
            out = inferer(batch, net).float()
        return (out * mask).flatten(2).sum(-1)  # (N, 2): each label's region sum

    return forward


class _Xaimed:
    """xaimed's engines. ``setup`` records the reference; ``run`` scores one unit of windows
    and reports the time spent recording patches (once per patch in a full run) apart from
    the windows' own time."""

    def __init__(self, name: str, net, x, region, args) -> None:
        self.name, self.args = name, args
        self.net, self.x, self.region = net, x, region
        self.engine = None

    def setup(self) -> None:
        from xaimed.methods.windows import PlainWindows, TiledIncrementalWindows

        ctx = _context(self.net, self.x, self.region, self.args)
        fill = torch.zeros_like(self.x)
        if self.name in ("xaimed incremental", "xaimed frozen-norm"):
            freeze = self.name == "xaimed frozen-norm"
            self.engine = TiledIncrementalWindows(ctx, fill, 1.0, freeze)
        else:
            patchwise = self.name == "xaimed patch-incremental"
            self.engine = PlainWindows(ctx, fill, patchwise=patchwise)
        self.reference = self.engine.reference

    def run(self, lo: torch.Tensor, hi: torch.Tensor) -> dict:
        scorer = getattr(self.engine, "scorer", None)
        record, patches = (scorer.record_s, scorer.patches_recorded) if scorer else (0.0, 0)
        t0 = time.perf_counter()
        scores = self.engine.scores(lo, hi, label="occlusion")
        wall = time.perf_counter() - t0
        self.drops = (self.reference - scores).double().cpu().numpy()
        if scorer is None:
            return {"wall_s": wall, "windows": len(lo), "windows_s": wall}
        record = scorer.record_s - record
        return {
            "wall_s": wall,
            "windows": len(lo),
            "record_s": record,
            "patches_recorded": scorer.patches_recorded - patches,
            "windows_s": wall - record,
        }

    def record(self) -> dict | None:
        scorer = getattr(self.engine, "scorer", None)
        return scorer.sidecar_fields() if scorer is not None else None


class _Captum:
    """Captum's Occlusion only takes a regular grid of windows with stride <= window, so each
    window goes through ``captum.attr.FeatureAblation`` with one feature for the window (the
    same whole forward pass per window as Occlusion makes); the rest of the volume is the
    other feature, ablated too and not used: a call is three tiled passes (reference, the
    rest, the window), and the time per window is the time per pass."""

    def __init__(self, name: str, net, x, region, args) -> None:
        self.forward = _forward(net, region, args)
        self.x = x

    def setup(self) -> None:
        pass

    def run(self, lo: torch.Tensor, hi: torch.Tensor) -> dict:
        from captum.attr import FeatureAblation

        mask = torch.zeros_like(self.x, dtype=torch.long)
        for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
            mask[(0, 0, *(slice(s, e) for s, e in zip(a, b, strict=True)))] = i + 1
        t0 = time.perf_counter()
        with torch.no_grad():
            attr = FeatureAblation(self.forward).attribute(
                self.x, baselines=0.0, target=1, feature_mask=mask, perturbations_per_eval=1
            )
        wall = time.perf_counter() - t0
        self.drops = np.array([float(attr[(0, 0, *(int(v) for v in a))]) for a in lo])
        return {"wall_s": wall, "windows": len(lo) + 2, "windows_s": wall}

    def record(self) -> None:
        return None


class _Monai:
    """MONAI occludes every window of its grid (mask size, overlap 0: our grid) that meets
    ``b_box`` grown by half the mask on each side; a ``b_box`` of the window's centre voxel
    gives that one window, one occluded pass. Its map there is the occluded score; the drop is
    the reference (one pass, once per case) minus it."""

    def __init__(self, name: str, net, x, region, args) -> None:
        from monai.visualize import OcclusionSensitivity

        self.forward = _forward(net, region, args)
        self.x, self.args = x, args
        self.occ = OcclusionSensitivity(
            self.forward, mask_size=args.window, n_batch=args.batch, mode=0.0, overlap=0.0,
            activate=False, verbose=False,
        )  # fmt: skip

    def setup(self) -> None:
        with torch.no_grad():
            self.reference = float(self.forward(self.x)[0, 1])

    def run(self, lo: torch.Tensor, hi: torch.Tensor) -> dict:
        drops = []
        t0 = time.perf_counter()
        for a in lo.tolist():
            centre = [v + self.args.window // 2 for v in a]
            box = [v for c in centre for v in (c, c + 1)]
            with torch.no_grad():
                occ_map, _ = self.occ(self.x, b_box=box)
            drops.append(self.reference - float(occ_map.flatten(2)[0, 1, 0]))
        wall = time.perf_counter() - t0
        self.drops = np.array(drops)
        return {"wall_s": wall, "windows": len(lo), "windows_s": wall}

    def record(self) -> None:
        return None


def _reply(message: dict) -> None:
    print("@@ " + json.dumps(message, default=str), flush=True)


def child(args) -> None:
    """A persistent worker for one contender: set up, then run the units the parent asks
    for one at a time (``run R``), and report its drops and memory (``finish``)."""
    torch.set_num_threads(args.threads)
    net, x = _setup(args)
    region = _region(net, x, args)
    shape = tuple(int(n) for n in x.shape[2:])
    partial = args.child in PARTIAL
    lo, hi, _ = _windows(args, shape, args.patch_sample if partial else args.sample)
    if partial and args.block:
        lo, hi = _block(args, shape, lo, hi)
    kind = _Captum if args.child == "captum" else _Monai if args.child == "monai" else _Xaimed
    contender = kind(args.child, net, x, region, args)
    before = _rss()
    t0 = time.perf_counter()
    contender.setup()
    if args.device == "cuda":
        torch.cuda.synchronize()
    _reply({"setup_s": time.perf_counter() - t0})
    starts: list = []
    drops: list = []
    for line in sys.stdin:
        command = line.split()
        if command[0] == "run":
            # Partial-pass engines run their whole unit every round (windows share patches as
            # in a full run); whole-pass contenders take every ``rounds``-th window.
            r = int(command[1])
            rows = slice(None) if partial else slice(r, None, args.rounds)
            got = contender.run(lo[rows], hi[rows])
            if args.device == "cuda":
                torch.cuda.synchronize()
            if not partial or not starts:
                starts += lo[rows].tolist()
                drops += [None if np.isnan(v) else float(v) for v in contender.drops]
            _reply(got)
        elif command[0] == "finish":
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            device_peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else 0
            _reply(
                {
                    "starts": starts,
                    "drops": drops,
                    "method_mib": (peak - before) / 2**20,
                    "device_mib": device_peak / 2**20,
                    "record": contender.record(),
                }
            )
            return


class _Worker:
    """The parent's handle on one contender's worker process."""

    def __init__(self, name: str, args, log) -> None:
        argv = [sys.executable, __file__, "--child", name]
        for key in ("norm", "size", "patch", "overlap", "window", "stride", "sample", "rounds"):
            argv += [f"--{key}", str(getattr(args, key))]
        argv += ["--patch-sample", str(args.patch_sample), "--block", str(args.block)]
        argv += ["--batch", str(args.batch), "--threads", str(args.threads)]
        argv += ["--device", args.device, "--precision", args.precision]
        self.name = name
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )

    def receive(self) -> dict:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])
        raise RuntimeError(f"{self.name}: the worker stopped (see its log)")

    def send(self, command: str) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.receive()


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


def _summarise(got: dict, rounds: list[dict], full: int) -> dict:
    """Extrapolate a contender's full run from its rounds. Whole-pass contenders: once-per-case
    setup + time per window x windows. Partial-pass engines: every patch recorded once (its
    measured time per recorded patch, the correction's backward pass included) + the windows'
    own time per window x windows."""
    windows = sum(r["windows"] for r in rounds)
    got["per_window_s"] = sum(r["windows_s"] for r in rounds) / windows
    got["windows"] = windows
    got["round_wall_s"] = [round(r["wall_s"], 2) for r in rounds]
    if "record_s" in rounds[0]:
        recorded = sum(r["patches_recorded"] for r in rounds)
        got["record_per_patch_s"] = sum(r["record_s"] for r in rounds) / max(1, recorded)
        got["once_s"] = got["record_per_patch_s"] * got["record"]["tiled"]["patches_per_pass"]
    else:
        got["once_s"] = got["setup_s"]
    got["full_run_s"] = got["once_s"] + got["per_window_s"] * full
    got["drops"] = [float("nan") if v is None else v for v in got["drops"]]
    return got


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
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="interleave the contenders over this many rounds (see the module's docstring)",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=4, help="inputs / patches per call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--only", default=",".join(CONTENDERS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    shape = tuple(int(n) for n in args.size.split(","))
    full = math.prod(math.ceil((n - args.window) / args.stride) + 1 for n in shape)
    names = [n for n in CONTENDERS if n in args.only.split(",")]
    if args.norm == "batch" and "xaimed frozen-norm" in names:
        names.remove("xaimed frozen-norm")  # batch norm has no per-sample statistics
    if args.sample < args.rounds:
        parser.error("--sample must give every round at least one window")
    with tempfile.TemporaryFile("w+") as log:
        try:
            results, load = _interleaved(names, args, log, full)
        finally:
            log.seek(0)
            failures = log.read()
            if "Traceback" in failures:
                print(failures[-3000:], file=sys.stderr)
    _report(results, load, args, full)


def _interleaved(names: list[str], args, log, full: int) -> tuple[dict[str, dict], list]:
    """Every contender's results, from workers run in interleaved rounds."""
    results: dict[str, dict] = {}
    workers: dict[str, _Worker] = {}
    timings: dict[str, list[dict]] = {}
    load = [round(v, 1) for v in os.getloadavg()]
    # Setups one after another (each alone on the machine), then the rounds: every contender
    # runs one unit per round in turn, so that a change of the machine's load hits all alike.
    for name in names:
        workers[name] = _Worker(name, args, log)
        results[name] = workers[name].receive()
        timings[name] = []
        print(f"{name}: set up in {results[name]['setup_s']:.1f} s", flush=True)
    for r in range(args.rounds):
        for name, worker in workers.items():
            got = worker.send(f"run {r}")
            timings[name].append(got)
            print(
                f"round {r + 1}: {name}: {got['wall_s']:.1f} s for {got['windows']} windows",
                flush=True,
            )
    for name, worker in workers.items():
        results[name].update(worker.send("finish"))
        worker.process.wait()
        _summarise(results[name], timings[name], full)
    load.append(round(os.getloadavg()[0], 1))
    return results, load


def _report(results: dict[str, dict], load: list, args, full: int) -> None:
    """Print the table (and write the JSON) of the contenders' extrapolated full runs."""
    patches = next(
        (g["record"]["tiled"]["patches_per_pass"] for g in results.values() if g.get("record")),
        None,
    )
    peers = [results[n]["full_run_s"] for n in ("captum", "monai") if n in results]
    best_peer = min(peers) if peers else float("nan")
    rows = []
    for name, got in results.items():
        row = {
            "contender": name,
            "full_run_s": round(got["full_run_s"], 1),
            "setup_s": round(got["setup_s"], 1),
            "once_per_case_s": round(got["once_s"], 1),
            "record_per_patch_s": round(got.get("record_per_patch_s", float("nan")), 3),
            "per_window_s": round(got["per_window_s"], 3),
            "extrapolated_from_windows": got["windows"],
            "round_wall_s": got["round_wall_s"],
            "speedup_vs_best_peer": round(best_peer / got["full_run_s"], 2),
            "method_mib": round(got["method_mib"], 1),
            "device_mib": round(got["device_mib"], 1),
            "vs_xaimed_plain": _compare(got, results["xaimed plain"])
            if "xaimed plain" in results
            else None,
            "vs_captum": _compare(got, results["captum"]) if "captum" in results else None,
            "engine_record": got.get("record"),
            "window_starts": got["starts"],
            "drops": got["drops"],
        }
        if name == "xaimed frozen-norm" and "xaimed incremental" in results:
            row["vs_exact_incremental"] = _compare(got, results["xaimed incremental"])
        rows.append(row)
    print(
        f"\n{args.norm}-norm UNet, {args.size}, patch {args.patch}^3 overlap {args.overlap}, "
        f"window {args.window} stride {args.stride}: {full} windows, {patches} patches; "
        f"{args.device} {args.precision}; {args.rounds} interleaved rounds; load average "
        f"{load[0]} before, {load[-1]} after"
    )
    print(
        f"{'contender':26} {'full run (s, extrap.)':>22} {'from':>5} {'x best peer':>12} "
        f"{'MiB':>8} {'vs Captum':>10} {'vs exact':>26}"
    )
    nan = float("nan")
    for r in rows:
        diff = (r["vs_captum"] or {}).get("max_diff", float("nan"))
        exact = r.get("vs_exact_incremental")
        quality = (
            f"r={exact.get('pearson', nan):.4f} rho={exact.get('spearman', nan):.4f} "
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
        summary = {
            "settings": vars(args),
            "full_windows": full,
            "patches_per_pass": patches,
            "load_average": load,
            "rows": rows,
        }
        args.json.write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
