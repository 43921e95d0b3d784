"""The run manifest: one row per case, method and target.

``status`` is ``ok``, ``failed`` (``error_type`` and ``error`` say why), ``interrupted`` (a
SIGTERM/SIGINT stopped the run first), ``not_run`` (``--fail-fast`` stopped it) or ``pending``
(not done yet: the run is going on, or was killed). ``case_index`` is the case's place in the
unsharded case order. ``resumed`` is
``yes`` where the work was done by an earlier run and skipped by this one.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypedDict, get_type_hints

from xaimed.errors import InputError
from xaimed.io.case import Case
from xaimed.io.safety import escape_text
from xaimed.writers.atomic import atomic_path


class ManifestRow(TypedDict, total=False):
    """One manifest row; its keys, in this order, are the manifest's columns.

    Values are what the CSV shows (text or numbers; None is written as an empty cell). A key
    that is not a column is an error when the row is written (see :func:`check_row`), so a
    misspelt column cannot vanish silently. Maps and other objects never travel in rows.
    """

    case_id: str
    case_index: int
    source: str
    label: str
    method: str
    target: str
    status: str
    error_type: str
    error: str
    nifti: str
    sidecar: str
    png: str
    wall_s: float
    predicted_class: str
    probability: float
    forward_passes: int
    backward_passes: int
    peak_host_mib: float
    peak_device_mib: float
    resumed: str
    warning: str
    series_uid: str
    dicom_pm: str
    dicom_sc: str
    stored: str


COLUMNS: tuple[str, ...] = tuple(ManifestRow.__annotations__)
# Columns naming a run's output files. The manifest stores them relative to its own folder, so
# that a run folder can be copied or moved whole (a test checks these are the writers' columns).
PATH_COLUMNS = ("nifti", "png", "dicom_pm", "dicom_sc", "sidecar")
# The number columns and their types (every other column is text).
_NUMBER_COLUMNS: dict[str, type] = {
    column: kind for column, kind in get_type_hints(ManifestRow).items() if kind in (int, float)
}
# Columns that differ between two runs of the same work (compare manifests without them).
TIMING_COLUMNS = ("wall_s", "peak_host_mib", "peak_device_mib", "resumed")


def check_row(row: Mapping[str, Any]) -> None:
    """Raise ValueError when ``row`` has a key that is not a manifest column."""
    unknown = [key for key in row if key not in COLUMNS]
    if unknown:
        raise ValueError(f"manifest row has unknown column(s) {unknown}; columns: {COLUMNS}")


def write_manifest(rows: Iterable[Mapping[str, Any]], path: Path) -> Path:
    """Write the manifest CSV atomically; the run rewrites it as cases finish (spaced so that the
    rewrites stay under 5 % of the run, see ``run.cohort``), so that a crash keeps what was done.
    Output paths inside the manifest's folder are written relative to it."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            check_row(row)
            row = relative_paths(row, path.parent)
            writer.writerow({k: _cell(row.get(k)) for k in COLUMNS})
    return path


def relative_paths(row: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """``row`` with its output paths (:data:`PATH_COLUMNS`) relative to ``base`` where they lie
    inside it; paths elsewhere stay as they are."""
    out = dict(row)
    root = base.resolve()
    for column in PATH_COLUMNS:
        value = out.get(column)
        if value and Path(value).is_absolute():
            with contextlib.suppress(ValueError):
                out[column] = Path(value).resolve().relative_to(root).as_posix()
    return out


def resolved_paths(row: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """``row`` with its relative output paths resolved against ``base`` (absolute text)."""
    out = dict(row)
    for column in PATH_COLUMNS:
        value = out.get(column)
        if value:
            out[column] = str(base.absolute() / value)
    return out


def read_manifest(path: Path) -> list[ManifestRow]:
    """The rows of the manifest at ``path`` as typed rows: numbers as ``int``/``float`` (an
    empty number cell as None), text as ``str``, output paths resolved against its folder so
    that a copied or moved run reads its own files. Columns that are not manifest columns (a
    manifest of another version) are left out. Raises InputError for a number cell that is not
    a number."""
    with path.open(newline="", encoding="utf-8") as fh:
        return [
            _typed(resolved_paths(row, path.parent), f"{path}, line {line}")
            for line, row in enumerate(csv.DictReader(fh), start=2)
        ]


def _typed(cells: Mapping[str, str], where: str) -> ManifestRow:
    row: dict[str, Any] = {}
    for column, text in cells.items():
        kind = _NUMBER_COLUMNS.get(column, str) if column in COLUMNS else None
        if kind is None:
            continue
        if kind is str or text is None:
            row[column] = text
            continue
        try:
            row[column] = kind(text) if text != "" else None
        except ValueError:
            raise InputError(
                f"{where}: column {column} holds {text!r}, not a number; the manifest was "
                "edited or damaged, so run `xaimed explain` again into this folder to rewrite it."
            ) from None
    return row  # type: ignore[return-value]


def _cell(value: Any) -> Any:
    # A file name that is not UTF-8 is kept with its bytes escaped (\xff), not dropped.
    if value is None:
        return ""
    return escape_text(value) if isinstance(value, str) else value


def case_row(case: Case, method: str, **fields: Any) -> ManifestRow:
    """A row of ``case`` and ``method`` (the columns every row has), with ``fields`` set."""
    row = ManifestRow(
        case_id=case.case_id, source=case.source, label=case.label or "", method=method
    )
    row.update(fields)  # type: ignore[typeddict-item]
    check_row(row)
    return row
