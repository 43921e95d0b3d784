"""Write the 2D sample study (chest-radiograph phantoms) and train its model, in seconds on CPU.

* ``sample_data/radiographs/``: four PA radiograph phantoms (two with a lung nodule, two
  without) as 2D int16 NIfTI (96 x 96 pixels of 3.75 mm), uint8 nodule masks and
  ``cases.csv`` (a case list for ``xaimed explain`` and ``xaimed evaluate``); the same films
  ``cxr01`` and ``cxr02`` also as DICOM studies in ``dicom/`` (a CR stored MONOCHROME1 and a DX
  stored MONOCHROME2, values that read back unchanged), as a radiography department exports them;
* ``xaimed/sample/radiograph_cnn_state.pt`` (state dict of ``SampleCNN2D``, width 8) and
  ``radiograph_cnn.json`` (how to rebuild it, what it expects, its validation accuracy).

Training uses pairs: each training subject with and without its nodule in the same batch, so
the only difference the network can learn from is the nodule (the same idea as the 3D sample
model). Everything is seeded; the sample cases' seeds (90100s) are disjoint from training's.
The script exits non-zero when a sample case is misclassified or when the gradient map does not
favour the nodule, so a checkpoint that would make the sample misleading is never written.

Run: ``python scripts/make_sample_radiographs.py`` (``--data-only``: write the films and the
DICOM studies, keep the trained model).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # Lets the script run from a plain checkout without installing the package.
    sys.path.insert(0, str(REPO_ROOT))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from xaimed.sample.network import SampleCNN2D  # noqa: E402
from xaimed.sample.radiograph import radiograph_nifti, radiograph_phantom  # noqa: E402
from xaimed.sample.radiograph_dicom import write_radiograph  # noqa: E402

SEED = 20_261_202
SHAPE = (96, 96)
SPACING_MM = (3.75, 3.75)
WIDTH = 8
CLASSES = ("healthy", "nodule")
TRAIN_SEEDS = range(1_000, 1_160)
VAL_SEEDS = range(2_000, 2_080)
CASES = (("cxr01", 90_101, True), ("cxr02", 90_102, False), ("cxr03", 90_103, True),
         ("cxr04", 90_104, False))  # fmt: skip
EPOCHS = 10
BATCH_SIZE = 16
LEARNING_RATE = 1e-2
# The saliency map of each nodule case must be this much stronger per pixel inside the nodule.
MIN_RATIO = 3.0
# Least accuracy on the unpaired validation films (nodules of 8-12 mm on 3.75 mm pixels).
MIN_ACCURACY = 0.85


def zscore(image: np.ndarray) -> np.ndarray:
    """Whole-image z-score, as ``configs/radiograph.yaml``'s preprocessing does."""
    return ((image - image.mean()) / max(float(image.std()), 1e-6)).astype(np.float32)


def network_input(image: np.ndarray) -> np.ndarray:
    """A ``(rows, columns)`` film as the network sees the NIfTI: (X = columns, Y = rows)."""
    return zscore(np.rint(image).T)


def dataset(seeds: range, paired: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Films of ``seeds`` (each with and without its nodule when ``paired``, else alternating)."""
    jobs = (
        [(s, flag) for s in seeds for flag in (False, True)]
        if paired
        else [(s, i % 2 == 1) for i, s in enumerate(seeds)]
    )
    images = [network_input(radiograph_phantom(s, shape=SHAPE, pixel_spacing=SPACING_MM,
                                                lesion=flag)[0]) for s, flag in jobs]  # fmt: skip
    labels = torch.tensor([int(flag) for _, flag in jobs])
    return torch.from_numpy(np.stack(images)[:, None]), labels


def train() -> tuple[SampleCNN2D, float]:
    """Train on pairs; BatchNorm statistics recomputed exactly at the end. Returns val accuracy."""
    images, labels = dataset(TRAIN_SEEDS, paired=True)
    model = SampleCNN2D(1, len(CLASSES), WIDTH)
    optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    n_pairs = len(labels) // 2
    steps = EPOCHS * ((2 * n_pairs + BATCH_SIZE - 1) // BATCH_SIZE)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, LEARNING_RATE, total_steps=steps)
    for epoch in range(EPOCHS):
        model.train()
        pairs = torch.randperm(n_pairs, generator=generator)
        order = torch.stack([2 * pairs, 2 * pairs + 1], dim=1).flatten()
        total = 0.0
        for batch in order.split(BATCH_SIZE):
            x = images[batch]
            # Left-right flips, the same within a pair, so the nodule's side is not learnt.
            if torch.rand(1, generator=generator).item() < 0.5:
                x = torch.flip(x, [2])
            optimiser.zero_grad()
            loss = loss_fn(model(x), labels[batch])
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        print(f"epoch {epoch + 1}: loss {total / len(labels):.4f}", flush=True)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative: exact population statistics
        for chunk in images.split(BATCH_SIZE):
            model(chunk)
        for norm in norms:
            norm.momentum = 0.1
    model.eval()
    refit_head(model, images, labels)
    val_images, val_labels = dataset(VAL_SEEDS, paired=False)
    with torch.no_grad():
        accuracy = float((model(val_images).argmax(1) == val_labels).float().mean())
    return model, accuracy


def refit_head(model: SampleCNN2D, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Fit the linear head again on the final eval-mode features (a small convex problem).

    The head trained on batch statistics is timid once BatchNorm uses population statistics; a
    nodule is a small part of the pooled image, so the head's bias matters.
    """
    with torch.no_grad():
        features = torch.cat(
            [torch.flatten(model.gap(model.block3(model.pool2(model.block2(model.pool1(
                model.block1(chunk)))))), 1) for chunk in images.split(64)]
        )  # fmt: skip
    optimiser = torch.optim.LBFGS(
        model.fc.parameters(), lr=0.5, max_iter=300, line_search_fn="strong_wolfe"
    )
    loss_fn = nn.CrossEntropyLoss()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = loss_fn(model.fc(features), labels) + 1e-3 * model.fc.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)


def write_cases(out_dir: Path) -> None:
    """The sample films, nodule masks and case list."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for case_id, seed, lesion in CASES:
        image, mask, spacing = radiograph_phantom(
            seed, shape=SHAPE, pixel_spacing=SPACING_MM, lesion=lesion
        )
        nib.save(radiograph_nifti(image, spacing), out_dir / "images" / f"{case_id}.nii.gz")
        mask_path = ""
        if lesion:
            mask_path = f"masks/{case_id}_nodule.nii.gz"
            nib.save(radiograph_nifti(mask, spacing, np.uint8), out_dir / mask_path)
        rows.append([case_id, f"images/{case_id}.nii.gz", mask_path, CLASSES[int(lesion)]])
    with (out_dir / "cases.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["case_id", "path", "mask", "label"])
        writer.writerows(rows)


# The films also written as DICOM: case id, kind (CR is stored MONOCHROME1, DX MONOCHROME2).
DICOM_CASES = (("cxr01", "CR"), ("cxr02", "DX"))


def write_dicom_cases(out_dir: Path) -> None:
    """``cxr01`` as a CR and ``cxr02`` as a DX study, one folder each under ``out_dir``.

    Values read back unchanged under ``dicom.voi_lut: apply`` (identity rescale and the LINEAR
    window that maps 0..4095 onto itself), so the radiograph model sees the same pixels as from
    the NIfTI films: the same map, on the same grid up to the origin.
    """
    seeds = {case_id: (seed, lesion) for case_id, seed, lesion in CASES}
    for case_id, kind in DICOM_CASES:
        seed, lesion = seeds[case_id]
        image, _, spacing = radiograph_phantom(
            seed, shape=SHAPE, pixel_spacing=SPACING_MM, lesion=lesion
        )
        folder = out_dir / case_id
        folder.mkdir(parents=True, exist_ok=True)
        write_radiograph(
            np.rint(image).T, folder / f"{kind}000001.dcm", kind=kind,  # type: ignore[arg-type]
            uid_seed=f"xaimed-sample-{case_id}", patient_id=f"SAMPLE-{case_id.upper()}",
            pixel_spacing=spacing, window=(2048.0, 4096.0), scale=False,
        )  # fmt: skip


def check(model: SampleCNN2D) -> bool:
    """Every sample case classified right; saliency stronger per pixel inside each nodule."""
    ok = True
    for case_id, seed, lesion in CASES:
        image, mask, _ = radiograph_phantom(
            seed, shape=SHAPE, pixel_spacing=SPACING_MM, lesion=lesion
        )
        x = torch.from_numpy(network_input(image))[None, None].requires_grad_(True)
        logits = model(x)
        p = float(torch.softmax(logits.detach(), 1)[0, 1])
        line = f"{case_id}: {CLASSES[int(lesion)]:7s} p(nodule) {p:.3f}"
        ok &= (p > 0.5) == lesion
        if lesion:
            logits[0, 1].backward()
            grad = x.grad[0, 0].abs().numpy()  # type: ignore[union-attr]
            inside = mask.T.astype(bool)
            ratio = float(grad[inside].mean() / grad[~inside].mean())
            line += f"  |saliency| in/out {ratio:.1f}"
            ok &= ratio >= MIN_RATIO
        print(line)
    return ok


def main() -> None:
    """Write the cases, train, check, save."""
    torch.manual_seed(SEED)
    torch.set_num_threads(2)  # CPU reductions split per thread: a fixed count repeats the weights
    torch.use_deterministic_algorithms(True)
    write_cases(REPO_ROOT / "sample_data" / "radiographs")
    write_dicom_cases(REPO_ROOT / "sample_data" / "radiographs" / "dicom")
    if "--data-only" in sys.argv[1:]:
        return
    model, accuracy = train()
    print(f"validation accuracy {accuracy:.3f} on {len(VAL_SEEDS)} unpaired films")
    if not check(model) or accuracy < MIN_ACCURACY:
        sys.exit("the trained model fails the sample checks; nothing saved")
    out = REPO_ROOT / "xaimed" / "sample"
    torch.save(model.state_dict(), out / "radiograph_cnn_state.pt")
    card = {
        "architecture": "xaimed.sample.network:SampleCNN2D",
        "kwargs": {"in_channels": 1, "num_classes": len(CLASSES), "width": WIDTH},
        "classes": list(CLASSES),
        "spatial_dims": 2,
        "input_size": list(SHAPE),
        "output": "logits",
        "trained_on": (
            f"{2 * len(TRAIN_SEEDS)} synthetic PA chest films from "
            f"xaimed.sample.radiograph (seeds {TRAIN_SEEDS.start}-{TRAIN_SEEDS.stop - 1}, each "
            f"with and without its nodule), {SHAPE[0]}x{SHAPE[1]} at {SPACING_MM[0]} mm, "
            "whole-image z-score"
        ),
        "val_accuracy": round(accuracy, 4),
    }
    (out / "radiograph_cnn.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"saved {out / 'radiograph_cnn_state.pt'}")


if __name__ == "__main__":
    main()
