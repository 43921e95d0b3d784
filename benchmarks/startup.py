"""Start-up cost of the light commands, as ratios to importing torch in the same run.

`xaimed --help`, `methods`, `validate` (a TorchScript config) and `init` import neither torch nor
numpy; this measures what they cost next to `python -c "import torch"` (what each of them paid
before) on the same machine at the same time, so that a loaded machine shifts both alike.
CPU time (user + system) of the child is reported besides wall time, since wall time on a shared
machine mostly measures the other processes.

usage: .venv/bin/python benchmarks/startup.py [--repeat N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _measure(argv: list[str], cwd: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        subprocess.run(
            [python, "-c", "import torch; torch.jit.script(torch.nn.Conv3d(1, 1, 1)).save('m.pt')"],
            cwd=folder,
            check=True,
        )
        config = "model: {torchscript: m.pt}\nmethods: [saliency, occlusion]\n"
        (folder / "c.yaml").write_text(config)
        commands = {
            "python -c 'import torch' (reference)": [python, "-c", "import torch"],
            "xaimed --help": [python, "-m", "xaimed", "--help"],
            "xaimed methods": [python, "-m", "xaimed", "methods"],
            "xaimed validate c.yaml": [python, "-m", "xaimed", "validate", "c.yaml"],
            "xaimed init new.yaml --force": [python, "-m", "xaimed", "init", "new.yaml", "--force"],
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        # Interleaved, so that a change in load hits every command alike.
        for _ in range(args.repeat):
            for name, argv in commands.items():
                results[name].append(_measure(argv, folder))
    reference = statistics.median(cpu for _, cpu in results[next(iter(results))])
    print(f"{'command':38} {'wall s':>8} {'cpu s':>8} {'cpu / import torch':>20}")
    for name, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:38} {wall:8.2f} {cpu:8.2f} {cpu / reference:20.2f}")


if __name__ == "__main__":
    main()
