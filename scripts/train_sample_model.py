"""Train the sample model (SampleCNN, width 8) on freshly generated phantoms and check it.

Everything is deterministic and runs on CPU in a few minutes: phantoms are generated once in
memory from fixed seeds (disjoint from the committed sample cases), the model is trained with
fixed torch / numpy seeds and deterministic algorithms, and the results are written to
``xaimed/sample/`` (installed with the package, so ``xaimed init`` can point at it):

* ``sample_cnn_state.pt``: the state dict (``torch.load(..., weights_only=True)``),
* ``sample_cnn.ts``: TorchScript of the model in eval mode,
* ``sample_cnn.json``: how to rebuild the model and what it expects.

Afterwards the script checks, on the committed ``sample_data/``, that every case is classified
correctly and that Integrated Gradients puts clearly more attribution per voxel inside each
lesion than outside it. It exits non-zero if either check fails, so a checkpoint that would make
the sample study misleading is never silently produced.

Run: ``python scripts/train_sample_model.py`` (after ``scripts/make_sample_data.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # Lets the script run from a plain checkout without installing the package.
    sys.path.insert(0, str(REPO_ROOT))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from captum.attr import IntegratedGradients  # noqa: E402
from nibabel.processing import resample_from_to  # noqa: E402
from torch import nn  # noqa: E402

from xaimed.sample.network import SampleCNN  # noqa: E402
from xaimed.sample.phantom import make_phantom  # noqa: E402

SEED = 20_240_601
# 240 training subjects, each seen with and without its lesion; 120 unpaired val subjects.
TRAIN_SEEDS = range(10_000, 10_240)
VAL_SEEDS = range(20_000, 20_120)
# The committed sample cases use seeds in the 90000s (scripts/make_sample_data.py).
SAMPLE_SEED_FLOOR = 90_000

INPUT_SIZE = (48, 48, 48)
SPACING_MM = 4.0
WIDTH = 8
CLASSES = ("healthy", "lesion")
LESION_CLASS = 1

EPOCHS = 10
BATCH_SIZE = 8
LEARNING_RATE = 5e-3
WEIGHT_DECAY = 1e-4
HEAD_L2 = 1e-3

IG_STEPS = 32
# Required per-voxel attribution ratio inside / outside the lesion (the brief asks for 5x; the
# script refuses anything below this so there is margin for the tool's own preprocessing).
MIN_IG_RATIO = 8.0


@dataclass(frozen=True)
class CaseCheck:
    """Outcome of the post-training checks on one committed sample case."""

    case_id: str
    label: int
    p_lesion: float
    abs_ratio: float | None
    signed_ratio: float | None

    @property
    def correct(self) -> bool:
        """Whether the predicted class (argmax) matches the label."""
        return int(self.p_lesion > 0.5) == self.label


def configure_determinism(threads: int) -> None:
    """Seed every RNG, fix the thread count and ask torch for deterministic kernels (CPU)."""
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    # CPU conv reductions are split per thread, so gradients differ in the last bits between
    # thread counts and a training run drifts; a fixed count keeps the checkpoint reproducible.
    torch.set_num_threads(threads)
    try:
        torch.use_deterministic_algorithms(True)
    except RuntimeError as exc:  # pragma: no cover - depends on the torch build
        print(f"note: deterministic algorithms unavailable ({exc})")


def zscore(volume: np.ndarray) -> np.ndarray:
    """Whole-volume z-score, as the sample config's preprocessing does."""
    volume = volume.astype(np.float32)
    return (volume - volume.mean()) / max(float(volume.std()), 1e-6)


def _phantom_input(job: tuple[int, bool]) -> np.ndarray:
    seed, lesion = job
    ph = make_phantom(seed, shape=INPUT_SIZE, spacing=(SPACING_MM,) * 3, lesion=lesion)
    return zscore(ph.image)


def make_dataset(jobs: list[tuple[int, bool]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Phantoms for (seed, lesion) jobs as (N, 1, 48, 48, 48) z-scores and (N,) labels.

    Generation is spread over processes; each phantom is fully determined by its seed, so the
    result does not depend on how the work is split.
    """
    assert all(seed < SAMPLE_SEED_FLOOR for seed, _ in jobs), "seeds overlap the sample cases"
    workers = max(1, min(os.cpu_count() or 1, 8))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        volumes = list(pool.map(_phantom_input, jobs, chunksize=8))
    images = torch.from_numpy(np.stack(volumes)[:, None])
    labels = torch.tensor([int(lesion) for _, lesion in jobs], dtype=torch.int64)
    return images, labels


def paired_jobs(seeds: range) -> list[tuple[int, bool]]:
    """Each subject twice, healthy then with its lesion: rows 2k and 2k+1 differ only there.

    A phantom's anatomy and even its noise do not depend on the lesion flag, so a pair is the
    same scan with and without the lesion. Training on pairs in the same batch cancels every
    feature that is not the lesion out of the gradient, which is what lets a network with global
    average pooling learn to find a lesion covering ~0.1 % of the volume within a few epochs, and
    is also why its attributions land on the lesion rather than on anatomy.
    """
    return [(seed, lesion) for seed in seeds for lesion in (False, True)]


def alternating_jobs(seeds: range) -> list[tuple[int, bool]]:
    """One volume per subject, alternately healthy and lesion (an unpaired, honest val set)."""
    return [(seed, i % 2 == 1) for i, seed in enumerate(seeds)]


def augment_pairs(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips along each axis, shared within each pair.

    ``batch`` holds pairs in consecutive rows; both members get the same flips so they keep
    differing only by the lesion. Flips make the lesion detector independent of side and
    orientation conventions. Shifts and intensity jitter were tried and only slowed training
    (convolutions plus global pooling are already shift invariant, and the whole-volume z-score
    removes global intensity scaling). All randomness comes from ``generator``.
    """
    out = batch.clone()
    for first in range(0, batch.shape[0], 2):
        flip_dims = [d + 2 for d in range(3) if torch.rand(1, generator=generator).item() < 0.5]
        if flip_dims:
            out[first : first + 2] = torch.flip(batch[first : first + 2], flip_dims)
    return out


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of correctly classified volumes (model put in eval mode)."""
    model.eval()
    predictions = torch.cat([model(chunk).argmax(1) for chunk in images.split(16)])
    return float((predictions == labels).float().mean())


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor) -> None:
    """Replace BatchNorm running statistics by exact averages over ``images``.

    With pairs in every batch the network can lean on batch statistics, and the exponential
    running averages collected while the weights were still moving are too rough for the small
    GAP signal of a lesion; exact population statistics make eval mode match training.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    for chunk in images.split(BATCH_SIZE):
        model(chunk)
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def train(
    train_data: tuple[torch.Tensor, torch.Tensor], val_data: tuple[torch.Tensor, torch.Tensor]
) -> tuple[SampleCNN, float, float]:
    """Train SampleCNN on paired data; returns the model (eval mode), train and val accuracy."""
    images, labels = train_data
    n_pairs = len(labels) // 2
    model = SampleCNN(in_channels=1, num_classes=len(CLASSES), width=WIDTH)
    optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = (n_pairs * 2 + BATCH_SIZE - 1) // BATCH_SIZE
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=LEARNING_RATE, total_steps=EPOCHS * steps_per_epoch, pct_start=0.15
    )
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)

    for epoch in range(1, EPOCHS + 1):
        model.train()
        pairs = torch.randperm(n_pairs, generator=generator)
        order = torch.stack([2 * pairs, 2 * pairs + 1], dim=1).flatten()
        running, correct = 0.0, 0
        for batch_index in order.split(BATCH_SIZE):
            optimiser.zero_grad()
            logits = model(augment_pairs(images[batch_index], generator))
            loss = loss_fn(logits, labels[batch_index])
            loss.backward()
            optimiser.step()
            schedule.step()
            running += loss.item() * len(batch_index)
            correct += int((logits.argmax(1) == labels[batch_index]).sum())
        print(
            f"epoch {epoch:2d}  loss {running / len(labels):.4f}  "
            f"batch acc {correct / len(labels):.3f}",
            flush=True,
        )

    recalibrate_batchnorm(model, images)
    print(f"after BatchNorm recalibration: val acc {accuracy(model, *val_data):.3f}", flush=True)
    train_accuracy = refit_head(model, train_data)
    return model, train_accuracy, accuracy(model, *val_data)


@torch.no_grad()
def pooled_features(model: SampleCNN, images: torch.Tensor) -> torch.Tensor:
    """The (N, 4*width) global-average-pooled features that ``model.fc`` sees, in eval mode."""
    model.eval()
    chunks = []
    for chunk in images.split(16):
        x = model.pool1(model.block1(chunk))
        x = model.pool2(model.block2(x))
        chunks.append(torch.flatten(model.gap(model.block3(x)), 1))
    return torch.cat(chunks)


def refit_head(model: SampleCNN, train_data: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Refit the linear head on the exact eval-mode features (L2-regularised logistic regression).

    After the BatchNorm recalibration the features are final, so fitting ``fc`` on them is a
    small convex problem. It makes the shipped eval-mode model confident where the head trained
    on batch statistics was timid (a lesion occupies ~0.1 % of the pooled volume, so the head's
    bias matters a lot), without the instability of fine-tuning the whole network.

    Returns the eval-mode training accuracy (the features are at hand, so it costs nothing).
    """
    images, labels = train_data
    features = pooled_features(model, images)
    head = model.fc
    optimiser = torch.optim.LBFGS(
        head.parameters(), lr=0.5, max_iter=300, line_search_fn="strong_wolfe"
    )
    loss_fn = nn.CrossEntropyLoss()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = loss_fn(head(features), labels) + HEAD_L2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        logits = head(features)
    print(f"head refit on eval-mode features: train loss {float(loss_fn(logits, labels)):.4f}")
    return float((logits.argmax(1) == labels).float().mean())


def _resample_to_input_grid(img: nib.Nifti1Image, order: int) -> np.ndarray:
    """Reorient to RAS and resample to 4 mm isotropic over the same field of view."""
    img = nib.as_closest_canonical(img)
    shape = np.asarray(img.shape[:3])
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    if np.allclose(zooms, SPACING_MM):
        return np.asarray(img.dataobj, dtype=np.float32)
    new_shape = np.maximum(np.rint(shape * zooms / SPACING_MM).astype(int), 1)
    centre = img.affine[:3, :3] @ ((shape - 1) / 2.0) + img.affine[:3, 3]
    new_affine = np.diag([SPACING_MM, SPACING_MM, SPACING_MM, 1.0])
    new_affine[:3, 3] = centre - SPACING_MM * (new_shape - 1) / 2.0
    resampled = resample_from_to(img, (tuple(new_shape), new_affine), order=order)
    return np.asarray(resampled.dataobj, dtype=np.float32)


def centre_crop_or_pad(volume: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Centre-crop or zero-pad ``volume`` to ``size``."""
    out = np.zeros(size, dtype=volume.dtype)
    src, dst = [], []
    for have, want in zip(volume.shape, size, strict=True):
        if have >= want:
            start = (have - want) // 2
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
        else:
            start = (want - have) // 2
            src.append(slice(0, have))
            dst.append(slice(start, start + have))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def load_case(image_path: Path, mask_path: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A committed case as a (48,48,48) z-scored input and, if given, its mask on that grid."""
    volume = zscore(_resample_to_input_grid(nib.load(image_path), order=1))
    volume = centre_crop_or_pad(volume, INPUT_SIZE)
    if mask_path is None:
        return volume, None
    mask = _resample_to_input_grid(nib.load(mask_path), order=0) > 0.5
    return volume, centre_crop_or_pad(mask, INPUT_SIZE)


def ig_ratios(model: nn.Module, volume: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """IG (zero baseline, lesion target) per-voxel ratios inside vs outside the mask.

    Returns ``mean(|attr| in) / mean(|attr| out)`` and ``mean(attr in) / mean(|attr| out)``.
    """
    inputs = torch.from_numpy(volume)[None, None]
    ig = IntegratedGradients(model)
    attr = ig.attribute(inputs, baselines=0.0, target=LESION_CLASS, n_steps=IG_STEPS)
    attr = attr[0, 0].detach().numpy()
    outside = np.abs(attr[~mask]).mean()
    return float(np.abs(attr[mask]).mean() / outside), float(attr[mask].mean() / outside)


def check_sample_cases(model: nn.Module, sample_dir: Path) -> list[CaseCheck]:
    """Classify every committed case and measure IG ratios on the lesion cases."""
    with (sample_dir / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    results = []
    for row in rows:
        case_id, label = row["case_id"], int(row["label"])
        mask_path = sample_dir / "masks" / f"{case_id}_lesion.nii.gz"
        volume, mask = load_case(
            sample_dir / "images" / f"{case_id}.nii.gz", mask_path if label == 1 else None
        )
        with torch.no_grad():
            logits = model(torch.from_numpy(volume)[None, None])
        p_lesion = float(torch.softmax(logits, dim=1)[0, LESION_CLASS])
        abs_ratio = signed_ratio = None
        if mask is not None:
            abs_ratio, signed_ratio = ig_ratios(model, volume, mask)
        results.append(CaseCheck(case_id, label, p_lesion, abs_ratio, signed_ratio))
    return results


def save_model(model: SampleCNN, out_dir: Path, val_accuracy: float) -> None:
    """Write the state dict, the TorchScript module and the JSON model card."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    torch.save(model.state_dict(), out_dir / "sample_cnn_state.pt")
    with warnings.catch_warnings():
        # torch.jit is deprecated in recent torch but remains the most portable way to ship a
        # model without its source; the warning is expected here and not actionable.
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
        scripted = torch.jit.script(model)
        torch.jit.save(scripted, str(out_dir / "sample_cnn.ts"))
    card = {
        "architecture": "xaimed.sample.network:SampleCNN",
        "kwargs": {"in_channels": 1, "num_classes": len(CLASSES), "width": WIDTH},
        "classes": list(CLASSES),
        "input_size": list(INPUT_SIZE),
        "output": "logits",
        "trained_on": (
            f"{2 * len(TRAIN_SEEDS)} synthetic head phantoms from xaimed.sample.phantom: "
            f"{len(TRAIN_SEEDS)} subjects (seeds {TRAIN_SEEDS.start}-{TRAIN_SEEDS.stop - 1}) "
            "each with and without a lesion, 48^3 at 4 mm, RAS, whole-volume z-score; "
            f"validated on {len(VAL_SEEDS)} unpaired subjects "
            f"(seeds {VAL_SEEDS.start}-{VAL_SEEDS.stop - 1}, 50% lesion)"
        ),
        "val_accuracy": round(val_accuracy, 4),
    }
    (out_dir / "sample_cnn.json").write_text(json.dumps(card, indent=2) + "\n")


def report_checks(checks: list[CaseCheck]) -> bool:
    """Print one line per case; true when every case is correct with a large enough IG ratio."""
    ok = True
    for c in checks:
        line = f"{c.case_id}: label {CLASSES[c.label]:7s} p(lesion) {c.p_lesion:.4f}"
        if not c.correct:
            ok = False
            line += "  MISCLASSIFIED"
        if c.abs_ratio is not None and c.signed_ratio is not None:
            line += f"  IG |in|/|out| {c.abs_ratio:.1f}  in/|out| {c.signed_ratio:.1f}"
            if min(c.abs_ratio, c.signed_ratio) < MIN_IG_RATIO:
                ok = False
                line += f"  BELOW {MIN_IG_RATIO:g}x"
        print(line)
    return ok


def verify_saved(model: nn.Module, out_dir: Path) -> bool:
    """Reload both saved forms and check they reproduce the in-memory model's logits."""
    probe = torch.randn(2, 1, *INPUT_SIZE, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        expected = model(probe)
        rebuilt = SampleCNN(in_channels=1, num_classes=len(CLASSES), width=WIDTH)
        state = torch.load(out_dir / "sample_cnn_state.pt", weights_only=True)
        rebuilt.load_state_dict(state)
        from_state = rebuilt.eval()(probe)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
            from_script = torch.jit.load(str(out_dir / "sample_cnn.ts"))(probe)
    ok = torch.allclose(from_state, expected, atol=1e-5) and torch.allclose(
        from_script, expected, atol=1e-5
    )
    print(f"saved checkpoints reproduce the model: {ok}")
    return ok


def main() -> int:
    """Generate data, train, save, then run the sample-study checks; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "xaimed" / "sample")
    parser.add_argument("--sample-data", type=Path, default=REPO_ROOT / "sample_data")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for training (default 1: the committed checkpoint was trained with "
        "1, other counts give slightly different weights; one thread is also barely slower for "
        "a model this small and does not collapse when the CPU is shared)",
    )
    args = parser.parse_args()

    configure_determinism(args.threads)
    start = time.perf_counter()
    train_data = make_dataset(paired_jobs(TRAIN_SEEDS))
    val_data = make_dataset(alternating_jobs(VAL_SEEDS))
    n_volumes = len(train_data[1]) + len(val_data[1])
    print(f"generated {n_volumes} phantoms in {time.perf_counter() - start:.1f} s")

    model, train_acc, val_acc = train(train_data, val_data)
    print(
        f"train acc {train_acc:.3f}  val acc {val_acc:.3f}  "
        f"(total {time.perf_counter() - start:.1f} s)"
    )
    checks = check_sample_cases(model, args.sample_data)
    ok = report_checks(checks)
    if ok:
        save_model(model, args.models, val_acc)
        ok = verify_saved(model, args.models)
    else:
        print(f"not writing {args.models}: the checkpoint would not pass its own checks")
    print(f"done in {time.perf_counter() - start:.1f} s: {'all checks passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
