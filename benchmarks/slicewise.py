"""Occlusion on a slice-wise (2.5D) model: the slice-incremental engine against whole passes.

Both contenders explain the same seeded 2D network run slice by slice (``model.slicewise``,
axial slices, ``--context`` neighbours each side) on the sample head phantom, with the same
windows and a zero baseline, in the same process, alternately, ``--repeats`` times each:

- ``plain``: ``occlusion`` with ``engine: plain``, every window a whole forward pass (all slices);
- ``slice_incremental``: ``engine: auto``, which re-runs only the slices a window touches (its
  own slices and those whose neighbours reach into it) and keeps the others' outputs.

Two networks: a 2D classifier (per-slice scores, mean over slices) and a 2D segmenter (per-slice
logit maps stacked into a 3D logit volume, its logits summed over the volume). Reported per
network: the median wall time of each engine, the ratio plain / slice-incremental, the slice
passes each made (full-pass equivalents) and the largest map difference relative to the plain
map's largest value.

    .venv/bin/python benchmarks/slicewise.py                    # 64 x 64 x 40, window 8
    .venv/bin/python benchmarks/slicewise.py --size 48 --slices 24 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


class Classifier2D(nn.Module):
    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.fc = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class Segmenter2D(nn.Module):
    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _run(network: nn.Module, x: torch.Tensor, args, engine: str):
    from xaimed.config import TargetSection
    from xaimed.engine.counting import CountingModel
    from xaimed.engine.targets import TargetReduction
    from xaimed.methods import registry
    from xaimed.methods.context import MethodContext
    from xaimed.models.slicewise import SliceWise

    sliced = SliceWise(network, world_axis="axial", context=args.context, reduce="mean")
    sliced.use_grid("RAS", "bench")
    sliced.slices_per_call = args.slices_per_call
    # The whole volume as the segmentation's region: a seeded random network may predict no
    # voxel of a label, and an empty region would score (and map) nothing.
    target = TargetSection(region="volume")
    reduction = TargetReduction(sliced, target, output="logits")
    reduction.configure(x, type("Case", (), {"case_id": "bench", "mask": None})())
    counting = CountingModel(reduction)
    info = registry.method("occlusion")
    params = info.params_model.model_validate(
        {"window": args.window, "stride": args.window, "baseline": "zero", "engine": engine}
    )
    ctx = MethodContext(
        model=counting, inputs=x, target=1, seed=0, batch_size=args.batch, device=x.device
    )
    t0 = time.perf_counter()
    out = info.run(ctx, params)
    wall = time.perf_counter() - t0
    return out.attribution, wall, counting.count.full_pass_equivalent, out.details["engine"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="In-plane size of the volume.")
    parser.add_argument("--slices", type=int, default=40, help="Axial slices.")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--context", type=int, default=1)
    parser.add_argument("--width", type=int, default=16, help="Channels of the 2D networks.")
    parser.add_argument("--batch", type=int, default=8, help="Perturbed volumes per batch.")
    parser.add_argument("--slices-per-call", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--networks", default="classifier,segmenter", help="Comma-separated.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/slicewise.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from xaimed.sample.phantom import make_phantom

    shape = (args.size, args.size, args.slices)
    phantom = make_phantom(0, shape=shape, spacing=(3.0, 3.0, 4.0), axcodes="RAS", lesion=True)
    x = torch.from_numpy(phantom.image)
    x = ((x - x.mean()) / x.std())[None, None]
    results = {}
    chosen = args.networks.split(",")
    for name, kind in (("classifier", Classifier2D), ("segmenter", Segmenter2D)):
        if name not in chosen:
            continue
        torch.manual_seed(0)
        network = kind(args.context * 2 + 1, args.width).eval()
        for p in network.parameters():
            p.requires_grad_(False)
        walls: dict[str, list[float]] = {"plain": [], "auto": []}
        maps, passes, engines = {}, {}, {}
        for _ in range(args.repeats):
            for engine in ("plain", "auto"):  # alternate, so load on the machine hits both
                maps[engine], wall, passes[engine], engines[engine] = _run(network, x, args, engine)
                walls[engine].append(wall)
        plain, fast = statistics.median(walls["plain"]), statistics.median(walls["auto"])
        diff = float((maps["auto"] - maps["plain"]).abs().max() / maps["plain"].abs().max())
        results[name] = {
            "plain_s": round(plain, 3),
            "slice_incremental_s": round(fast, 3),
            "speedup": round(plain / fast, 2),
            "plain_full_pass_equivalent": round(passes["plain"], 2),
            "slice_incremental_full_pass_equivalent": round(passes["auto"], 2),
            "engine_used": engines["auto"],
            "max_difference_relative": diff,
        }
        print(f"{name}: plain {plain:.2f} s, slice-incremental {fast:.2f} s "
              f"(x{plain / fast:.2f}); full passes {passes['plain']:.1f} vs "
              f"{passes['auto']:.1f}; max |diff| / max |map| {diff:.1e}")  # fmt: skip
    record = {"volume": list(shape), "window": args.window, "context": args.context,
              "width": args.width, "threads": args.threads, "repeats": args.repeats,
              "results": results}  # fmt: skip
    if args.out.exists():  # networks measured before with the same settings are kept
        before = json.loads(args.out.read_text())
        if {k: v for k, v in before.items() if k != "results"} == {
            k: v for k, v in record.items() if k != "results"
        }:
            record["results"] = {**before["results"], **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
