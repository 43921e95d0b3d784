"""A second study with real anatomy for measurements: lesions synthesised into the MNI152 brain.

The sample study's phantoms are geometric; defaults chosen on them alone could suit phantoms
only. This script builds a study from the MNI152 2009 T1 template and white-matter mask that
ship inside nilearn's wheel (``nilearn.datasets.load_mni152_template``; nothing is downloaded),
at 4 mm. Each subject is the template with its own variation: a shift of up to 1.5 voxels, a
global intensity scale, a smooth multiplicative bias field and Gaussian noise. A lesion subject
has in addition one hyperintense ellipsoid (10-16 mm radii, 80-120 % brighter than the white matter
it sits in, soft-edged) at a random white-matter position; its mask is the ellipsoid.

It then trains ``SampleCNN`` (width 8, the sample model's architecture) on CPU, deterministically
(fixed seeds, one thread count, deterministic kernels), on subjects with and without their
lesion, and writes:

* ``benchmarks/data/mni_cnn_state.pt`` (committed, ~90 kB) unless it exists (``--retrain``
  overwrites it), trained on seeds 10000-10059;
* under ``--out`` (default ``runs/mni-study``, not committed): ``images/``, ``masks/``,
  ``labels.csv`` and ``config.yaml`` for the evaluation subjects (seeds from 90000, disjoint from
  training), which ``benchmarks/baselines.py`` explains and evaluates.

It prints the model's accuracy on the evaluation subjects and exits non-zero below 7/8.

    .venv/bin/python scripts/make_mni_study.py   # 13 min on 2 cores shared with 7 other jobs
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for path in (REPO_ROOT, REPO_ROOT / "scripts"):
    if str(path) not in sys.path:
        # Lets the script run from a plain checkout and reuse the sample model's training steps.
        sys.path.insert(0, str(path))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402
from torch import nn  # noqa: E402

from xaimed.sample.network import SampleCNN  # noqa: E402

STATE = REPO_ROOT / "benchmarks" / "data" / "mni_cnn_state.pt"
SEED = 20_261_201
SPACING_MM = 4.0
TRAIN_SEEDS = range(10_000, 10_060)
EVAL_SEEDS = range(90_000, 90_008)  # even: lesion, odd: healthy
EPOCHS = 5
LEARNING_RATE = 1e-2


def _template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MNI152 T1 template and white-matter mask at 4 mm, and the 4 mm affine."""
    from nilearn.datasets import load_mni152_template, load_mni152_wm_mask

    t1 = load_mni152_template(resolution=2)
    wm = load_mni152_wm_mask(resolution=2)
    image = ndimage.zoom(np.asarray(t1.get_fdata(), dtype=np.float32), 0.5, order=1)
    white = ndimage.zoom(np.asarray(wm.get_fdata(), dtype=np.float32), 0.5, order=0) > 0.5
    affine = t1.affine.copy()
    affine[:3, :3] *= 2.0
    # Crop to 40 x 48 x 40 (the brain fits: it is about 35 x 44 x 32 voxels at 4 mm).
    size = (40, 48, 40)
    start = [(have - want) // 2 for have, want in zip(image.shape, size, strict=True)]
    box = tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
    affine[:3, 3] += affine[:3, :3] @ np.asarray(start, dtype=np.float64)
    return image[box], white[box], affine


def make_subject(
    seed: int, template: np.ndarray, white: np.ndarray, *, lesion: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One subject's image and lesion mask; anatomy and noise depend on the seed only."""
    rng = np.random.default_rng(seed)
    shift = rng.uniform(-1.5, 1.5, size=3)
    scale = rng.uniform(0.85, 1.15)
    coarse = rng.normal(0.0, 1.0, size=(4, 4, 4))
    bias = ndimage.zoom(coarse, np.asarray(template.shape) / 4.0, order=3)
    bias = 1.0 + 0.08 * bias / max(float(np.abs(bias).max()), 1e-6)
    noise = rng.normal(0.0, 0.03, size=template.shape).astype(np.float32)
    centre_pick = rng.integers(0, 1 << 31)
    radii = rng.uniform(2.5, 4.0, size=3)  # voxels of 4 mm
    contrast = rng.uniform(0.8, 1.2)
    image = template.copy()
    mask = np.zeros(template.shape, dtype=bool)
    if lesion:
        inner = ndimage.binary_erosion(white, iterations=1)
        candidates = np.argwhere(inner)
        centre = candidates[int(centre_pick) % len(candidates)]
        grid = np.indices(template.shape, dtype=np.float32)
        d2 = sum(((grid[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
        mask = d2 <= 1.0
        soft = ndimage.gaussian_filter(mask.astype(np.float32), 0.7)
        level = float(np.median(template[white]))
        image = image + contrast * level * soft
    image = ndimage.shift(image * scale * bias, shift, order=1, mode="constant")
    mask = ndimage.shift(mask.astype(np.float32), shift, order=0, mode="constant") > 0.5
    return (image + noise).astype(np.float32), mask


def _zscore(volume: np.ndarray) -> np.ndarray:
    return (volume - volume.mean()) / max(float(volume.std()), 1e-6)


def train(template: np.ndarray, white: np.ndarray) -> SampleCNN:
    """SampleCNN on pairs (each subject without and with its lesion), deterministic on CPU."""
    from train_sample_model import augment_pairs, recalibrate_batchnorm, refit_head

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    volumes, labels = [], []
    for seed in TRAIN_SEEDS:
        for lesion in (False, True):
            volumes.append(_zscore(make_subject(seed, template, white, lesion=lesion)[0]))
            labels.append(int(lesion))
    images = torch.from_numpy(np.stack(volumes)[:, None])
    targets = torch.tensor(labels)
    model = SampleCNN(in_channels=1, num_classes=2, width=8)
    optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    batch = 8
    n_pairs = len(targets) // 2
    steps = EPOCHS * ((2 * n_pairs + batch - 1) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=LEARNING_RATE, total_steps=steps, pct_start=0.15
    )
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    for epoch in range(1, EPOCHS + 1):
        model.train()
        pairs = torch.randperm(n_pairs, generator=generator)
        order = torch.stack([2 * pairs, 2 * pairs + 1], dim=1).flatten()
        total = 0.0
        for index in order.split(batch):
            optimiser.zero_grad()
            loss = loss_fn(model(augment_pairs(images[index], generator)), targets[index])
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
        print(f"epoch {epoch}: loss {total / len(targets):.4f}", flush=True)
    recalibrate_batchnorm(model, images)
    refit_head(model, (images, targets))
    return model.eval()


def write_study(out: Path, template: np.ndarray, white: np.ndarray, affine: np.ndarray) -> None:
    """The evaluation subjects as NIfTI files, their masks, labels and an xaimed config."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for k, seed in enumerate(EVAL_SEEDS):
        case_id = f"mni{k + 1:02d}"
        lesion = k % 2 == 0
        image, mask = make_subject(seed, template, white, lesion=lesion)
        nib.save(nib.Nifti1Image(image, affine), out / "images" / f"{case_id}.nii.gz")
        if lesion:
            nib.save(
                nib.Nifti1Image(mask.astype(np.uint8), affine),
                out / "masks" / f"{case_id}_lesion.nii.gz",
            )
        rows.append({"case_id": case_id, "label": int(lesion)})
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["case_id", "label"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "config.yaml").write_text(
        f"""# Written by scripts/make_mni_study.py: the MNI152 study's model and preprocessing.
model:
  architecture: xaimed.sample.network:SampleCNN
  kwargs: {{in_channels: 1, num_classes: 2, width: 8}}
  weights: {STATE}
  input_size: [40, 48, 40]
  in_channels: 1
  classes: [healthy, lesion]
  output: logits
preprocessing:
  reorient: RAS
  intensity: {{kind: zscore}}
  crop_pad: {{size: model, pad_value: min}}
target:
  class: 1
methods: [integrated_gradients]
outputs: {{nifti: true, png: false}}
runtime: {{device: cpu, seed: 0}}
evaluate:
  masks: {out.resolve()}/masks/{{case_id}}_lesion.nii.gz
""",
        encoding="utf-8",
    )


def check(out: Path, template_model: SampleCNN) -> int:
    """Correctly classified evaluation subjects (through the written files, z-scored)."""
    correct = 0
    with (out / "labels.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            data = np.asarray(nib.load(out / "images" / f"{row['case_id']}.nii.gz").dataobj)
            x = torch.from_numpy(_zscore(data.astype(np.float32)))[None, None]
            with torch.no_grad():
                p = float(torch.softmax(template_model(x), dim=1)[0, 1])
            correct += int((p > 0.5) == (row["label"] == "1"))
            print(f"{row['case_id']}: label {row['label']}, p(lesion) {p:.3f}")
    return correct


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "mni-study")
    parser.add_argument("--retrain", action="store_true", help="Train even if the state exists.")
    args = parser.parse_args()
    started = time.perf_counter()
    template, white, affine = _template()
    if args.retrain or not STATE.is_file():
        model = train(template, white)
        STATE.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), STATE)
        print(f"wrote {STATE}")
    model = SampleCNN(in_channels=1, num_classes=2, width=8)
    model.load_state_dict(torch.load(STATE, weights_only=True))
    model.eval()
    write_study(args.out, template, white, affine)
    correct = check(args.out, model)
    print(f"{correct}/{len(EVAL_SEEDS)} correct; {time.perf_counter() - started:.0f} s")
    return 0 if correct >= len(EVAL_SEEDS) - 1 else 1


if __name__ == "__main__":
    sys.exit(main())
