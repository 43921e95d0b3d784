"""Occlusion on a 3D volume: xaimed against Captum's Occlusion and MONAI's OcclusionSensitivity.

Every contender explains the same model, volume, window, stride and baseline (a constant 0):

- ``xaimed``: the ``occlusion`` method, batch size chosen from ``--budget`` (default 2GB);
- ``captum ppe=N``: ``captum.attr.Occlusion`` with ``perturbations_per_eval`` N; N = 1 is
  Captum's default, the others are the sweep (``--sweep``), the best of which is reported;
- ``monai``: ``monai.visualize.OcclusionSensitivity`` with ``mask_size`` = window, ``overlap``
  = 1 - stride / window (so its windows are ours), a constant fill, no activation; its map is
  the occluded score averaged over covering windows, so ``f(x) - map`` is compared.

Measurement: one invocation runs each contender in its own child process (``--child``), one
after the other, so peak memories do not contaminate each other. A child builds the model and
volume, records its resident memory (VmRSS) and then runs the method once; it reports wall time
of the method alone, its peak resident memory (``ru_maxrss``, which includes the Python
interpreter, torch and the model) and the peak minus the resident memory before the run (the
memory the method itself needed, which is what ``runtime.memory_budget`` bounds). The parent
prints a table with the ratios against xaimed and the largest absolute difference of each map
to xaimed's.

Precision: fp32 throughout; ``--bf16-size`` (default 48, 0 to skip) also runs xaimed under bf16
autocast on a smaller volume (CPU bf16 convolutions are slow) and reports its largest absolute
difference to the fp32 map.

Model: the sample study's architecture (``xaimed.sample.network.SampleCNN``, width 4, seeded
random weights) on a smooth random volume; weights do not change the cost.

    .venv/bin/python benchmarks/occlusion.py            # 96^3, window 16, stride 16: 216 windows
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _setup(size: int, width: int, seed: int):
    import torch
    from scipy import ndimage

    from xaimed.sample.network import SampleCNN

    torch.manual_seed(seed)
    model = SampleCNN(width=width).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    rng = np.random.default_rng(seed)
    volume = ndimage.gaussian_filter(rng.normal(size=(size,) * 3), 3).astype(np.float32)
    volume = (volume - volume.mean()) / volume.std()
    return model, torch.from_numpy(volume)[None, None]


def _xaimed(model, x, args, precision: str = "fp32"):
    import torch

    from xaimed.config import parse_bytes
    from xaimed.engine.batching import choose_batch_size
    from xaimed.engine.counting import CountingModel
    from xaimed.methods import registry
    from xaimed.methods.context import MethodContext

    dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
    counting = CountingModel(model, autocast_dtype=dtype)
    batch = choose_batch_size(counting, x, budget=parse_bytes(args.budget), fixed=None)
    info = registry.find("occlusion")
    params = info.params_model.model_validate(
        {"window": args.window, "stride": args.stride, "baseline": 0.0}
    )
    ctx = MethodContext(
        model=counting, inputs=x, target=1, seed=0, batch_size=batch, device=x.device
    )
    out = info.run(ctx, params)
    return out.attribution, {"batch_size": out.details["batch_size"]}


def _captum(model, x, args, ppe: int):
    from captum.attr import Occlusion

    w, s = (args.window,) * 3, (args.stride,) * 3
    attr = Occlusion(model).attribute(
        x,
        sliding_window_shapes=(1, *w),
        strides=(1, *s),
        baselines=0.0,
        target=1,
        perturbations_per_eval=ppe,
    )
    return attr, {"perturbations_per_eval": ppe}


def _monai(model, x, args):
    import torch
    from monai.visualize import OcclusionSensitivity

    occ = OcclusionSensitivity(
        model,
        mask_size=args.window,
        n_batch=args.monai_batch,
        mode=0.0,
        overlap=1 - args.stride / args.window,
        activate=False,
        verbose=False,
    )
    sensitivity, _ = occ(x)
    with torch.no_grad():
        reference = model(x)[0, 1]
    return (reference - sensitivity[0, 1].as_tensor())[None, None], {"n_batch": args.monai_batch}


def child(args) -> None:
    """Run one contender and print its measurements as one JSON line."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    size = args.size
    model, x = _setup(size, args.width, args.seed)
    before = _rss_bytes()
    t0 = time.perf_counter()
    result: dict = {}
    if args.child == "xaimed":
        attr, extra = _xaimed(model, x, args)
    elif args.child.startswith("captum:"):
        attr, extra = _captum(model, x, args, int(args.child.split(":")[1]))
    elif args.child == "monai":
        attr, extra = _monai(model, x, args)
    elif args.child == "bf16":
        model, x = _setup(args.bf16_size, args.width, args.seed)
        args.window, args.stride = args.window // 2, args.stride // 2
        t1 = time.perf_counter()
        ref, _ = _xaimed(model, x, args, "fp32")
        fp32_s = time.perf_counter() - t1
        t0 = time.perf_counter()
        attr, extra = _xaimed(model, x, args, "bf16")
        extra |= {
            "fp32_wall_s": fp32_s,
            "bf16_max_abs_diff": float((attr.float() - ref).abs().max()),
            "fp32_max_abs": float(ref.abs().max()),
        }
    else:
        raise SystemExit(f"unknown contender {args.child}")
    wall = time.perf_counter() - t0
    np.save(args.map_out, attr.detach().float().numpy()[0, 0])
    result |= {
        "wall_s": wall,
        "peak_rss": _peak_bytes(),
        "rss_before": before,
        "extra": extra,
    }
    print(json.dumps(result))


def _run_child(name: str, args, folder: Path) -> dict:
    out = folder / f"{name.replace(':', '_')}.npy"
    cmd = [sys.executable, __file__, "--child", name, "--map-out", str(out)]
    for key in ("size", "window", "stride", "budget", "threads", "width", "seed", "bf16_size"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    cmd += ["--monai-batch", str(args.monai_batch)]
    print(f"running {name} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        return {"name": name, "error": proc.stderr.strip().splitlines()[-1][:200]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["name"] = name
    result["map"] = np.load(out)
    return result


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--budget", default="2GB")
    parser.add_argument("--sweep", default="1,8,32", help="Captum perturbations_per_eval")
    parser.add_argument("--monai-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16-size", type=int, default=48)
    parser.add_argument("--no-monai", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--map-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    names = ["xaimed"] + [f"captum:{n}" for n in args.sweep.split(",") if n]
    if not args.no_monai:
        names.append("monai")
    with tempfile.TemporaryDirectory() as tmp:
        results = [_run_child(name, args, Path(tmp)) for name in names]
        bf16 = _run_child("bf16", args, Path(tmp)) if args.bf16_size else None
    ours = results[0]
    if "error" in ours:
        raise SystemExit(f"xaimed failed: {ours['error']}")
    n_windows = (int(np.ceil((args.size - args.window) / args.stride)) + 1) ** 3
    print(
        f"\nocclusion, {args.size}^3 input, window {args.window}, stride {args.stride} "
        f"({n_windows} perturbations), baseline 0, SampleCNN(width={args.width}), "
        f"{args.threads} threads, budget {args.budget}; xaimed batch "
        f"{ours['extra']['batch_size']}\n"
    )
    header = (
        "| contender | wall s | peak RSS MiB | method's own MiB | time / xaimed "
        "| memory / xaimed | max abs diff to xaimed |"
    )
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|")
    table = []
    for r in results:
        if "error" in r:
            print(f"| {r['name']} | failed: {r['error']} | | | | | |")
            continue
        own = r["peak_rss"] - r["rss_before"]
        row = {
            "name": r["name"],
            "wall_s": round(r["wall_s"], 2),
            "peak_rss_mib": round(r["peak_rss"] / 2**20),
            "own_mib": round(own / 2**20),
            "time_ratio": round(r["wall_s"] / ours["wall_s"], 2),
            "memory_ratio": round(own / max(1, ours["peak_rss"] - ours["rss_before"]), 2),
            "max_abs_diff": float(np.abs(r["map"] - ours["map"]).max()),
            "extra": r["extra"],
        }
        table.append(row)
        print(
            f"| {row['name']} | {row['wall_s']:.1f} | {_mb(r['peak_rss'])} | {_mb(own)} "
            f"| {row['time_ratio']:.2f} | {row['memory_ratio']:.2f} | {row['max_abs_diff']:.2e} |"
        )
    captum = [r for r in table if r["name"].startswith("captum")]
    if captum:
        best = min(captum, key=lambda r: r["wall_s"])
        print(f"\nbest Captum setting: {best['name']} ({best['time_ratio']:.2f} x xaimed's time)")
    budget_ok = None
    from xaimed.config import parse_bytes

    own = ours["peak_rss"] - ours["rss_before"]
    budget_ok = own <= parse_bytes(args.budget)
    print(f"xaimed's own peak {_mb(own)} MiB within the {args.budget} budget: {budget_ok}")
    if bf16 is not None and "error" not in bf16:
        e = bf16["extra"]
        print(
            f"bf16 autocast ({args.bf16_size}^3, window {args.window // 2}, stride "
            f"{args.stride // 2}): max abs diff to fp32 {e['bf16_max_abs_diff']:.2e} "
            f"(map max {e['fp32_max_abs']:.2e}); {bf16['wall_s']:.1f} s vs fp32 "
            f"{e['fp32_wall_s']:.1f} s"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "settings": {k: v for k, v in vars(args).items() if k != "json"},
                    "results": table,
                    "bf16": bf16 and {k: v for k, v in bf16.items() if k != "map"},
                    "within_budget": budget_ok,
                },
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
