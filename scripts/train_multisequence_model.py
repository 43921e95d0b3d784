"""Train the four-sequence sample model and write the four-sequence sample case.

The model is :class:`xaimed.sample.network.MultiSequenceCNN` with four input channels (T1, T1ce,
T2, FLAIR, in that order) and width 8, trained to tell lesion from healthy on phantoms of
:func:`xaimed.sample.phantom.make_sequences` (32^3 at 6 mm, RAS, each channel z-scored like
``configs/multisequence.yaml`` does). The lesion does not show on T1, is bright on T1ce and
FLAIR and moderately bright on T2, so the model can only find it in the last three.

Deterministic (fixed seeds, one thread, deterministic algorithms) and quick on a CPU (well under
a minute). Writes:

* ``xaimed/sample/multiseq_cnn_state.pt``: the state dict (``torch.load(..., weights_only=True)``),
* ``xaimed/sample/multiseq_cnn.json``: how to rebuild the model and its validation accuracy,
* ``sample_data/multisequence/``: ``case07`` (lesion) and ``case08`` (healthy), one int16 NIfTI
  per sequence (32^3 at 6 mm), case07's lesion mask, and ``cases.csv`` (columns t1, t1ce, t2,
  flair).
  case08's T2 and FLAIR are acquired on their own grid (5 mm, another shape), so that
  ``preprocessing.channels.resample_to`` has something to do.

Run: ``python scripts/train_multisequence_model.py``. Exits non-zero when the validation
accuracy is below 0.9 or a sample case is classified wrongly.
"""

from __future__ import annotations

import csv
import json
import random
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # Lets the script run from a plain checkout without installing the package.
    sys.path.insert(0, str(REPO_ROOT))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from xaimed.sample.network import MultiSequenceCNN  # noqa: E402
from xaimed.sample.phantom import make_sequences, mask_to_nifti, phantom_to_nifti  # noqa: E402

# Training from scratch with max pooling depends on the initial weights: this seed is one
# that learns the task (the script refuses a model that did not).
SEED = 1
SEQUENCES = ("t1", "t1ce", "t2", "flair")
TRAIN_SEEDS = range(30_000, 30_024)  # each subject seen with and without its lesion
VAL_SEEDS = range(31_000, 31_024)  # unpaired: even seeds with a lesion
SHAPE = (24, 24, 24)  # the model's input grid
SPACING = (8.0, 8.0, 8.0)
CASE_SHAPE = (32, 32, 32)  # the committed cases' grid: the config resamples them to 8 mm
CASE_SPACING = (6.0, 6.0, 6.0)
WIDTH = 8
EPOCHS = 12
BATCH_SIZE = 8
LEARNING_RATE = 1e-2
MIN_ACCURACY = 0.9

OUT_MODEL = REPO_ROOT / "xaimed" / "sample"
OUT_DATA = REPO_ROOT / "sample_data" / "multisequence"
# The committed cases: id, seed (in the 90000s, disjoint from training), lesion, T2/FLAIR grid.
CASES = (
    ("case07", 90_007, True, None),
    ("case08", 90_008, False, ((38, 38, 30), (5.0, 5.0, 6.5))),
)


def _zscore(volume: np.ndarray) -> np.ndarray:
    """What preprocessing.intensity zscore does to each channel."""
    return (volume - volume.mean()) / (volume.std() or 1.0)


def _sample(seed: int, lesion: bool) -> np.ndarray:
    images = make_sequences(seed, shape=SHAPE, spacing=SPACING, lesion=lesion, sequences=SEQUENCES)
    # Rounded to int16 as the NIfTI files store them.
    return np.stack([_zscore(np.rint(images[s].image)) for s in SEQUENCES]).astype(np.float32)


def _data(seeds: range, paired: bool) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, labels = [], []
    for seed in seeds:
        for lesion in (True, False) if paired else (seed % 2 == 0,):
            inputs.append(_sample(seed, lesion))
            labels.append(int(lesion))
    return torch.from_numpy(np.stack(inputs)), torch.tensor(labels)


def train() -> tuple[MultiSequenceCNN, float]:
    """The trained model (eval mode) and its validation accuracy."""
    torch.manual_seed(SEED)
    random.seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x, y = _data(TRAIN_SEEDS, paired=True)
    model = MultiSequenceCNN(in_channels=len(SEQUENCES), num_classes=2, width=WIDTH)
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(SEED)  # the order of the training samples
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(x), generator=order)
        total = 0.0
        for start in range(0, len(x), BATCH_SIZE):
            batch = perm[start : start + BATCH_SIZE]
            optimiser.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        print(f"epoch {epoch + 1}: loss {total / len(x):.4f}")
    model.eval()
    vx, vy = _data(VAL_SEEDS, paired=False)
    with torch.no_grad():
        accuracy = float((model(vx).argmax(1) == vy).float().mean())
    return model, accuracy


def write_cases() -> None:
    """The committed four-sequence cases and their case list."""
    OUT_DATA.mkdir(parents=True, exist_ok=True)
    rows = []
    for case_id, seed, lesion, other_grid in CASES:
        images = make_sequences(
            seed, shape=CASE_SHAPE, spacing=CASE_SPACING, lesion=lesion, sequences=SEQUENCES
        )
        if other_grid is not None:
            # The same subject's T2 and FLAIR on a grid of their own (same seed: same anatomy).
            shape, spacing = other_grid
            other = make_sequences(
                seed, shape=shape, spacing=spacing, lesion=lesion, sequences=SEQUENCES
            )
            images = {**images, "t2": other["t2"], "flair": other["flair"]}
        for name in SEQUENCES:
            nib.save(phantom_to_nifti(images[name]), OUT_DATA / f"{case_id}_{name}.nii.gz")
        if lesion:
            nib.save(mask_to_nifti(images["t1"]), OUT_DATA / f"{case_id}_lesion.nii.gz")
        rows.append(
            [case_id, *(f"{case_id}_{name}.nii.gz" for name in SEQUENCES), "lesion" if lesion
             else "healthy"]
        )  # fmt: skip
    with (OUT_DATA / "cases.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["case_id", *SEQUENCES, "label"])
        writer.writerows(rows)


def main() -> None:
    """Train, write the model and the cases, check the cases are classified right."""
    t0 = time.perf_counter()
    model, accuracy = train()
    print(f"validation accuracy {accuracy:.3f} ({time.perf_counter() - t0:.1f} s)")
    torch.save(model.state_dict(), OUT_MODEL / "multiseq_cnn_state.pt")
    description = {
        "architecture": "xaimed.sample.network:MultiSequenceCNN",
        "kwargs": {"in_channels": len(SEQUENCES), "num_classes": 2, "width": WIDTH},
        "channels": list(SEQUENCES),
        "classes": ["healthy", "lesion"],
        "input_size": list(SHAPE),
        "output": "logits",
        "trained_on": f"{2 * len(TRAIN_SEEDS)} four-sequence phantoms (seeds "
        f"{TRAIN_SEEDS.start}-{TRAIN_SEEDS.stop - 1}, each with and without a lesion), "
        f"{SHAPE[0]}^3 at {SPACING[0]:g} mm, RAS, per-channel z-score; validated on "
        f"{len(VAL_SEEDS)} unpaired subjects",
        "val_accuracy": round(accuracy, 4),
    }
    (OUT_MODEL / "multiseq_cnn.json").write_text(json.dumps(description, indent=2) + "\n")
    write_cases()
    wrong = []
    with torch.no_grad():
        for case_id, seed, lesion, _ in CASES:
            x = torch.from_numpy(_sample(seed, lesion))[None]
            if int(model(x).argmax(1)) != int(lesion):
                wrong.append(case_id)
    if accuracy < MIN_ACCURACY or wrong:
        sys.exit(f"model not good enough: accuracy {accuracy:.3f}, misclassified {wrong}")
    print(f"wrote the model and {len(CASES)} cases ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
