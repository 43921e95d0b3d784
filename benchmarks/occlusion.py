"""Occlusion on a 3D volume: xaimed's engines against Captum's Occlusion and MONAI's
OcclusionSensitivity.

Every contender explains the same model, volume, window, stride and baseline (a constant 0):

- ``xaimed``: the ``occlusion`` method with the plain engine (a whole forward pass per window),
  batch size chosen from ``--budget`` (default 2GB);
- ``xaimed-incremental``: the same with ``engine: incremental`` (only what each window changes
  is recomputed; exact);
- ``xaimed-approx``: the incremental engine with ``approximate`` set to ``--approximate``;
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
prints a table with the ratios against the plain engine, the largest absolute difference and
the correlation of each map to the plain engine's, and the incremental and approximate
engines' speed-ups against the best Captum setting, MONAI and the plain engine.

``--peer-window N`` is for models where a whole forward pass per window takes hours: the
plain engine, Captum and MONAI then run with window = stride = N (few windows, each still one
whole forward pass of the same volume) and their time is scaled by the ratio of window counts;
the incremental engines run the full window set. Their maps are then compared on that reduced
window set (an extra ``xaimed-incremental@peer`` run).

Precision: fp32 throughout; ``--bf16-size`` (default 48, 0 to skip) also runs xaimed under bf16
autocast on a smaller volume (CPU bf16 convolutions are slow) and reports its largest absolute
difference to the fp32 map.

Models (``--model``): ``sample``, the sample study's architecture (``SampleCNN``, width
``--width``, seeded random weights, on a smooth random volume; ``--trained`` loads the shipped
checkpoint, width 8, and explains a synthetic head phantom); ``resnet18``, MONAI's
``resnet18(spatial_dims=3, n_input_channels=1, num_classes=2)``, seeded random weights, on the
smooth random volume.

    .venv/bin/python benchmarks/occlusion.py            # 96^3, window 16, stride 16: 216 windows
    .venv/bin/python benchmarks/occlusion.py --trained --size 64 --window 8 --stride 8
    .venv/bin/python benchmarks/occlusion.py --model resnet18 --window 16 --stride 8 \
        --peer-window 32 --sweep 1,8 --bf16-size 0
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


def _setup(args, size: int | None = None):
    import torch
    from scipy import ndimage

    size = size or args.size
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    volume = ndimage.gaussian_filter(rng.normal(size=(size,) * 3), 3).astype(np.float32)
    if args.model == "resnet18":
        from monai.networks.nets import resnet18

        model = resnet18(spatial_dims=3, n_input_channels=1, num_classes=2)
    else:
        from xaimed.sample.network import SampleCNN

        model = SampleCNN(width=8 if args.trained else args.width)
        if args.trained:
            from xaimed.sample.phantom import make_phantom

            folder = Path(__file__).resolve().parent.parent / "xaimed" / "sample"
            state = torch.load(folder / "sample_cnn_state.pt", weights_only=True)
            model.load_state_dict(state)
            spacing = (192.0 / size,) * 3  # the 48^3 x 4 mm field of view of the training data
            volume = make_phantom(seed=20000, lesion=True, shape=(size,) * 3, spacing=spacing).image
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    volume = (volume - volume.mean()) / volume.std()
    device = torch.device(args.device)
    return model.to(device), torch.from_numpy(volume.astype(np.float32))[None, None].to(device)


def _xaimed(model, x, args, precision: str = "fp32", engine: str = "plain", approximate=None):
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
        {
            "window": args.window,
            "stride": args.stride,
            "baseline": 0.0,
            "engine": engine,
            "approximate": approximate,
        }
    )
    ctx = MethodContext(
        model=counting, inputs=x, target=1, seed=0, batch_size=batch, device=x.device
    )
    out = info.run(ctx, params)
    keep = ("batch_size", "windows_per_batch", "windows_computed", "approximate", "engine")
    return out.attribution, {k: out.details[k] for k in keep if k in out.details}


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


def _peer_geometry(args, name: str) -> bool:
    """With --peer-window, whole-pass contenders run with window = stride = peer window."""
    whole_pass = name in ("xaimed", "monai", "xaimed-incremental@peer") or name.startswith("captum")
    if args.peer_window and whole_pass:
        args.window = args.stride = args.peer_window
        return True
    return False


def child(args) -> None:
    """Run one contender and print its measurements as one JSON line."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    model, x = _setup(args)
    _peer_geometry(args, args.child)
    before = _rss_bytes()
    t0 = time.perf_counter()
    result: dict = {}
    if args.child == "xaimed":
        attr, extra = _xaimed(model, x, args)
    elif args.child in ("xaimed-incremental", "xaimed-incremental@peer"):
        attr, extra = _xaimed(model, x, args, engine="incremental")
    elif args.child == "xaimed-approx":
        approximate = json.loads(args.approximate)
        attr, extra = _xaimed(model, x, args, engine="incremental", approximate=approximate)
    elif args.child.startswith("captum:"):
        attr, extra = _captum(model, x, args, int(args.child.split(":")[1]))
    elif args.child == "monai":
        attr, extra = _monai(model, x, args)
    elif args.child == "bf16":
        model, x = _setup(args, args.bf16_size)
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
    np.save(args.map_out, attr.detach().float().cpu().numpy()[0, 0])
    result |= {
        "wall_s": wall,
        "peak_rss": _peak_bytes(),
        "rss_before": before,
        "extra": extra,
    }
    print(json.dumps(result))


def _windows(size: int, window: int, stride: int) -> int:
    return (int(np.ceil((size - min(window, size)) / stride)) + 1) ** 3


def _run_child(name: str, args, folder: Path) -> dict:
    out = folder / f"{name.replace(':', '_').replace('@', '_')}.npy"
    cmd = [sys.executable, __file__, "--child", name, "--map-out", str(out)]
    for key in (
        "size",
        "window",
        "stride",
        "budget",
        "threads",
        "width",
        "seed",
        "bf16_size",
        "model",
        "peer_window",
        "approximate",
        "device",
    ):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    cmd += ["--monai-batch", str(args.monai_batch)]
    if args.trained:
        cmd.append("--trained")
    print(f"running {name} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        return {"name": name, "error": proc.stderr.strip().splitlines()[-1][:200]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["name"] = name
    result["map"] = np.load(out)
    full = _windows(args.size, args.window, args.stride)
    geometry = argparse.Namespace(**vars(args))
    if _peer_geometry(geometry, name):
        ran = _windows(args.size, geometry.window, geometry.stride)
        result["measured_s"] = result["wall_s"]
        result["wall_s"] *= full / ran
        result["extrapolated_from_windows"] = ran
    return result


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("sample", "resnet18"), default="sample")
    parser.add_argument("--trained", action="store_true", help="sample: the shipped checkpoint")
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
    parser.add_argument("--no-incremental", action="store_true")
    parser.add_argument(
        "--approximate",
        default='{"projective_threshold": 0.25, "refine": {"top_fraction": 0.5}}',
        help="the approximate contender's occlusion.approximate (JSON); none: no such run",
    )
    parser.add_argument("--peer-window", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--map-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    names = ["xaimed"]
    if not args.no_incremental:
        names.append("xaimed-incremental")
        if args.approximate != "none":
            names.append("xaimed-approx")
        if args.peer_window:
            names.append("xaimed-incremental@peer")
    names += [f"captum:{n}" for n in args.sweep.split(",") if n]
    if not args.no_monai:
        names.append("monai")
    with tempfile.TemporaryDirectory() as tmp:
        results = [_run_child(name, args, Path(tmp)) for name in names]
        bf16 = _run_child("bf16", args, Path(tmp)) if args.bf16_size else None
    ours = results[0]
    if "error" in ours:
        raise SystemExit(f"xaimed failed: {ours['error']}")
    by_name = {r["name"]: r for r in results if "error" not in r}
    n_windows = _windows(args.size, args.window, args.stride)
    model = (
        "MONAI resnet18"
        if args.model == "resnet18"
        else f"SampleCNN(width={8 if args.trained else args.width}"
        + (", trained)" if args.trained else ")")
    )
    print(
        f"\nocclusion, {args.size}^3 input, window {args.window}, stride {args.stride} "
        f"({n_windows} windows), baseline 0, {model}, {args.threads} threads, budget "
        f"{args.budget}; xaimed batch {ours['extra']['batch_size']}"
        + (
            f"; whole-pass contenders extrapolated from window = stride = {args.peer_window}"
            if args.peer_window
            else ""
        )
        + "\n"
    )
    header = (
        "| contender | wall s | peak RSS MiB | method's own MiB | time / plain "
        "| memory / plain | max abs diff to plain | correlation to plain |"
    )
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    table = []
    for r in results:
        if "error" in r:
            print(f"| {r['name']} | failed: {r['error']} | | | | | | |")
            continue
        own = r["peak_rss"] - r["rss_before"]
        # Maps are comparable when both ran the same windows.
        reference = ours if ("measured_s" in r) == ("measured_s" in ours) else None
        if r["name"] == "xaimed-incremental@peer":
            reference = ours
        row = {
            "name": r["name"],
            "wall_s": round(r["wall_s"], 2),
            "measured_s": r.get("measured_s") and round(r["measured_s"], 2),
            "extrapolated_from_windows": r.get("extrapolated_from_windows"),
            "peak_rss_mib": round(r["peak_rss"] / 2**20),
            "own_mib": round(own / 2**20),
            "time_ratio": round(r["wall_s"] / ours["wall_s"], 4),
            "memory_ratio": round(own / max(1, ours["peak_rss"] - ours["rss_before"]), 2),
            "max_abs_diff": None
            if reference is None
            else float(np.abs(r["map"] - reference["map"]).max()),
            "correlation": None if reference is None else _corr(r["map"], reference["map"]),
            "extra": r["extra"],
        }
        table.append(row)
        diff = "–" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.2e}"
        corr = "–" if row["correlation"] is None else f"{row['correlation']:.4f}"
        wall = f"{row['wall_s']:.1f}" + (" (est.)" if row["measured_s"] else "")
        print(
            f"| {row['name']} | {wall} | {_mb(r['peak_rss'])} | {_mb(own)} "
            f"| {row['time_ratio']:.3f} | {row['memory_ratio']:.2f} | {diff} | {corr} |"
        )
    captum = [r for r in table if r["name"].startswith("captum")]
    best = min(captum, key=lambda r: r["wall_s"]) if captum else None
    if best:
        print(f"\nbest Captum setting: {best['name']} ({best['time_ratio']:.2f} x plain's time)")
    speedups: dict[str, dict[str, float]] = {}
    rows = {r["name"]: r for r in table}
    for name in ("xaimed-incremental", "xaimed-approx"):
        if name not in rows:
            continue
        mine = rows[name]["wall_s"]
        peers = {"plain": rows["xaimed"]["wall_s"]}
        if best:
            peers["best Captum"] = best["wall_s"]
        if "monai" in rows:
            peers["MONAI"] = rows["monai"]["wall_s"]
        speedups[name] = {k: round(v / mine, 2) for k, v in peers.items()}
        text = ", ".join(f"{v:.1f} x {k}" for k, v in speedups[name].items())
        print(f"{name}: faster than {text}")
    if "xaimed-approx" in by_name and "xaimed-incremental" in by_name:
        exact, approx = by_name["xaimed-incremental"]["map"], by_name["xaimed-approx"]["map"]
        quality = {
            "correlation": _corr(approx, exact),
            "max_abs_diff": float(np.abs(approx - exact).max()),
            "exact_max_abs": float(np.abs(exact).max()),
        }
        speedups["approx_vs_exact"] = quality
        print(
            f"approximate vs exact map: correlation {quality['correlation']:.4f}, largest "
            f"difference {quality['max_abs_diff']:.2e} (map max {quality['exact_max_abs']:.2e})"
        )
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
                    "speedups": speedups,
                    "bf16": bf16 and {k: v for k, v in bf16.items() if k != "map"},
                    "within_budget": budget_ok,
                },
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
