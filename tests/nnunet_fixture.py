"""Make a tiny trained nnU-Net v2 results folder with nnunetv2's own code (run as a script).

    python tests/nnunet_fixture.py WORKDIR

nnunetv2 reads its folders from environment variables when it is imported, so this runs in a
subprocess with nnUNet_raw / nnUNet_preprocessed / nnUNet_results pointing into WORKDIR. Steps,
each nnU-Net's own: a synthetic dataset (bright blobs labelled 1, zero border so cropping to
non-zero matters, spacings that differ per case so resampling matters), fingerprint, planning,
preprocessing, then two folds trained by ``nnUNetTrainer.run_training()`` for a few dozen
iterations. Two changes keep it fast on CPU: the plans' feature widths are shrunk (the network is
still built from the plans by nnU-Net), and the optimiser is Adam instead of SGD, because plain
SGD for a few iterations predicts background everywhere. Prints the results folder.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

DATASET_ID = 501
DATASET = f"Dataset{DATASET_ID:03d}_Blobs"
SPACINGS = [(1.0, 1.0, 2.0), (1.2, 0.9, 2.4), (0.9, 1.1, 1.8), (1.1, 1.0, 2.2)]


def blob_case(shape: tuple[int, int, int], spacing, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like image (HU) with one bright blob, its label, and a zero border."""
    rng = np.random.default_rng(seed)
    centre = [rng.uniform(0.35, 0.65) * n for n in shape]
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).astype(float)
    dist = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing, strict=True)))
    label = (dist < 5.0).astype(np.uint8)
    image = rng.normal(40, 15, shape) + 200 * label
    image[:2], image[-2:] = 0, 0  # a zero slab on the first axis: cropped to non-zero
    label[:2], label[-2:] = 0, 0
    return image.astype(np.float32), label


def write(path: Path, data: np.ndarray, spacing) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(path))


def make_raw(raw: Path) -> None:
    folder = raw / DATASET
    for i, spacing in enumerate(SPACINGS):
        image, label = blob_case((22, 22, 12), spacing, seed=i)
        write(folder / "imagesTr" / f"blob_{i:03d}_0000.nii.gz", image, spacing)
        write(folder / "labelsTr" / f"blob_{i:03d}.nii.gz", label, spacing)
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "blob": 1},
        "numTraining": len(SPACINGS),
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "NibabelIO",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset))


def shrink_plans(preprocessed: Path) -> None:
    path = preprocessed / DATASET / "nnUNetPlans.json"
    plans = json.loads(path.read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [4 * 2**i for i in range(len(arch["features_per_stage"]))]
    plans["configurations"]["3d_fullres"]["batch_size"] = 2
    path.write_text(json.dumps(plans, indent=1))


def write_splits(preprocessed: Path, folds: int) -> None:
    """nnU-Net's own splits file, so that two folds need only a handful of cases."""
    cases = [f"blob_{i:03d}" for i in range(len(SPACINGS))]
    splits = [
        {"train": [c for c in cases if c != cases[f]], "val": [cases[f]]} for f in range(folds)
    ]
    (preprocessed / DATASET / "splits_final.json").write_text(json.dumps(splits))


def train(folds: list[int], iterations: int) -> Path:
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    os.environ["nnUNet_n_proc_DA"] = "0"  # noqa: SIM112 (augment in this process)
    base = Path(nnUNet_preprocessed) / DATASET
    plans = load_json(str(base / "nnUNetPlans.json"))
    dataset_json = load_json(str(base / "dataset.json"))
    for fold in folds:
        torch.manual_seed(fold)
        plans["continue_training"] = False  # nnU-Net's run_training entry point sets this
        trainer = nnUNetTrainer(plans, "3d_fullres", fold, dataset_json, torch.device("cpu"))
        trainer.num_epochs = 1
        trainer.num_iterations_per_epoch = iterations
        trainer.num_val_iterations_per_epoch = 1
        trainer.initialize()
        adam = torch.optim.Adam(trainer.network.parameters(), lr=3e-3)
        trainer.optimizer = adam
        trainer.lr_scheduler = PolyLRScheduler(adam, 3e-3, trainer.num_epochs)
        trainer.run_training()
        folder = Path(trainer.output_folder_base)
    return folder


def main(work: Path, iterations: int = 40) -> Path:
    for name in ("raw", "preprocessed", "results"):
        (work / name).mkdir(parents=True, exist_ok=True)
        os.environ[f"nnUNet_{name}"] = str(work / name)
    os.environ["nnUNet_n_proc_DA"] = "1"  # noqa: SIM112 (planning sets torch threads from it)
    os.environ["nnUNet_compile"] = "false"  # noqa: SIM112 (nnU-Net's own name)
    make_raw(work / "raw")
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    extract_fingerprints([DATASET_ID], num_processes=1, check_dataset_integrity=True)
    plan_experiments([DATASET_ID])
    shrink_plans(work / "preprocessed")
    preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=(1,))
    write_splits(work / "preprocessed", 2)
    folder = train([0, 1], iterations)
    return folder


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 40))
