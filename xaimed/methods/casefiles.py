"""What a method may need to know of the case beyond its input tensor.

Label-map groupings, reference baselines and blur widths in millimetres need the case id (for
``{case_id}`` in per-case paths), the folder relative paths resolve against (the config's), and
the record of how the source became the model's input, so that a file on the source grid can
follow the image onto the model's grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xaimed.errors import InputError

if TYPE_CHECKING:
    from xaimed.config import PreprocessingSection
    from xaimed.preprocess import Prepared


@dataclass(frozen=True)
class CaseFiles:
    """One case as the model sees it, with the means to bring per-case files onto its grid."""

    case_id: str
    prepared: Prepared
    preprocessing: PreprocessingSection
    model_size: tuple[int, int, int] | None = None
    base_dir: Path | None = None
    # From a case list's mask column; replaces target.mask for this case.
    mask: Path | None = None

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size of the model's input grid."""
        return self.prepared.geometry.spacing

    def path(self, template: str | Path, key: str) -> Path:
        """``template`` with ``{case_id}`` filled in, relative to the config's folder.

        A ``Path`` (from a case list) is taken literally: no placeholder, already absolute.
        """
        if isinstance(template, Path):
            name = str(template)
        else:
            try:
                name = template.format(case_id=self.case_id)
            except (KeyError, IndexError, ValueError):
                raise InputError(
                    f"{key}: {template!r} may only use the placeholder {{case_id}}; fix the path."
                ) from None
        path = Path(name).expanduser()
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        if not path.is_file():
            raise InputError(
                f"case {self.case_id}: {key} file {path} does not exist; check the path "
                "(relative paths start at the config's folder)."
            )
        return path

    def _read(self, template: str | Path, key: str):
        from xaimed.io.image import read_image

        volume = read_image(self.path(template, key))
        source = self.prepared.source
        if not volume.geometry.same_grid(source.geometry):
            raise InputError(
                f"case {self.case_id}: {key} is on another grid ({volume.geometry.describe()}) "
                f"than the image ({source.geometry.describe()}, or another affine); resample it "
                "onto the image's grid."
            )
        return volume

    def labels(self, template: str | Path, key: str) -> np.ndarray:
        """An integer label map given on the source grid, on the model's grid (nearest)."""
        volume = self._read(template, key)
        data = np.asarray(volume.array)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise InputError(f"case {self.case_id}: {key} must be a 3D label map.")
        return self.prepared.forward_labels(np.rint(data).astype(np.int64))

    def image(self, template: str, key: str) -> np.ndarray:
        """An image on the source grid, preprocessed exactly as the case: (C, I, J, K)."""
        from xaimed.preprocess import prepare

        volume = self._read(template, key)
        return prepare(volume, self.preprocessing, model_size=self.model_size).array
