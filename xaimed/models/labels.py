"""Label names of an nnU-Net results folder, read from its dataset.json (no nnunetv2 needed)."""

from __future__ import annotations

import json
from pathlib import Path


def nnunet_labels(folder: Path) -> list[str]:
    """Output names in channel order: labels by value, or the regions of region-based training."""
    labels = json.loads((folder / "dataset.json").read_text())["labels"]
    if any(isinstance(v, list | tuple) for v in labels.values()):
        return [name for name, v in labels.items() if v != 0 and name != "background"]
    return [name for name, _ in sorted(labels.items(), key=lambda item: int(item[1]))]


def nnunet_target_problems(folder: Path, target: int | str) -> list[str]:
    """Problems of ``target.class`` against the folder's label names (empty when it fits)."""
    try:
        names = nnunet_labels(folder)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"model.nnunet.folder: {folder / 'dataset.json'} cannot be read ({exc})"]
    if isinstance(target, str) and target not in ("predicted", "all") and target not in names:
        return [f"target.class: {target!r} is not a label of the nnU-Net model; labels: {names}"]
    return []
