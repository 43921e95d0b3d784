"""Write the committed sample study to ``sample_data/``.

Six phantoms (three with a lesion, three healthy, interleaved) as int16 NIfTI images, uint8
lesion masks for the lesion cases and a ``labels.csv``. Most cases use the grid the sample model
was trained on (48^3, 4 mm, RAS); ``case03`` (LPS, anisotropic, different shape) and ``case04``
(LAS) are there so the tool's reorientation and resampling have something to do.

Run from anywhere: ``python scripts/make_sample_data.py [--out sample_data]``. The output is
deterministic: the seeds below are fixed and disjoint from the training seeds.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # Lets the script run from a plain checkout without installing the package.
    sys.path.insert(0, str(REPO_ROOT))

import nibabel as nib  # noqa: E402

from xaimed.sample.phantom import make_phantom, mask_to_nifti, phantom_to_nifti  # noqa: E402

CLASS_NAMES = ("healthy", "lesion")


@dataclass(frozen=True)
class SampleCase:
    """One committed case: its id, phantom seed, label and acquisition grid."""

    case_id: str
    seed: int
    lesion: bool
    shape: tuple[int, int, int] = (48, 48, 48)
    spacing: tuple[float, float, float] = (4.0, 4.0, 4.0)
    axcodes: str = "RAS"

    @property
    def label(self) -> int:
        """Class index: 0 healthy, 1 lesion."""
        return int(self.lesion)


# Seeds live in the 90000s; the training script draws from far below that and checks it.
CASES: tuple[SampleCase, ...] = (
    SampleCase("case01", 90_001, lesion=True),
    SampleCase("case02", 90_002, lesion=False),
    SampleCase(
        "case03", 90_003, lesion=True, shape=(56, 56, 38), spacing=(3.5, 3.5, 5.0), axcodes="LPS"
    ),
    SampleCase("case04", 90_004, lesion=False, axcodes="LAS"),
    SampleCase("case05", 90_005, lesion=True),
    SampleCase("case06", 90_006, lesion=False),
)


def _format_triplet(values: tuple[float, ...]) -> str:
    return "x".join(f"{v:g}" for v in values)


def write_case(case: SampleCase, out_dir: Path) -> None:
    """Generate one case and write its image (and, for lesion cases, its mask)."""
    ph = make_phantom(
        case.seed, shape=case.shape, spacing=case.spacing, axcodes=case.axcodes, lesion=case.lesion
    )
    nib.save(phantom_to_nifti(ph), out_dir / "images" / f"{case.case_id}.nii.gz")
    if case.lesion:
        nib.save(mask_to_nifti(ph), out_dir / "masks" / f"{case.case_id}_lesion.nii.gz")


def write_labels(cases: tuple[SampleCase, ...], path: Path) -> None:
    """Write ``labels.csv``; shape and spacing are ``x``-joined, e.g. ``48x48x48`` and ``4x4x4``."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["case_id", "label", "label_name", "shape", "spacing", "axcodes"])
        for case in cases:
            writer.writerow(
                [
                    case.case_id,
                    case.label,
                    CLASS_NAMES[case.label],
                    _format_triplet(case.shape),
                    _format_triplet(case.spacing),
                    case.axcodes,
                ]
            )


def main() -> None:
    """Write every sample case and the labels table, then report the study's size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "sample_data")
    args = parser.parse_args()
    out_dir: Path = args.out
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)

    for case in CASES:
        write_case(case, out_dir)
        grid = f"{case.axcodes} {case.shape} {case.spacing}"
        print(f"{case.case_id}: {CLASS_NAMES[case.label]:7s} {grid}")
    write_labels(CASES, out_dir / "labels.csv")

    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    print(f"wrote {len(CASES)} cases to {out_dir} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
