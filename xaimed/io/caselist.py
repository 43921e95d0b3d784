"""Read a case list: a CSV or TSV file with one row per case.

Columns (header row required, names case-insensitive, others ignored): ``case_id``, ``path``
(a NIfTI file or a folder holding one DICOM study) or ``study_uid`` (a study on the DICOM
server of the config's ``pacs`` section), and optionally ``mask`` (a NIfTI label map
on the image's grid, used where ``target.region: mask`` needs one) and ``label`` (recorded with
the outputs). Relative paths start at the list's folder. Rows keep the file's order.

A multi-sequence list (config ``preprocessing.channels`` naming columns, e.g. ``t1, t1ce, t2,
flair``) has one column per channel instead of ``path``, each cell a path of a format
:data:`xaimed.io.readers.READERS` reads (a NIfTI file, a folder with one DICOM study); every
row fills every channel column.

Paths are not opened here: a missing or unreadable entry fails its own case when it is read,
not the whole run. Problems with the list itself (no such column, duplicate or unusable ids)
stop the run before anything is done, all reported at once.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from xaimed.errors import InputError
from xaimed.io.case import Case, ChannelFile, safe_id

REQUIRED = ("case_id",)
SOURCES = ("path", "study_uid")
UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def read_case_list(path: Path, channels: tuple[str, ...] | None = None) -> list[Case]:
    """The cases of a case list, in the file's order; with ``channels``, each row's files in
    those columns (matched case-insensitively) are one multi-sequence case."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(
            f"case list {path}: cannot be read ({exc}); give a CSV/TSV file."
        ) from None
    if not rows:
        raise InputError(f"case list {path}: the file is empty; it needs a header row.")
    header = [name.strip().lower() for name in rows[0]]
    used = ("case_id", *SOURCES, "mask", "label", *(c.lower() for c in channels or ()))
    twice = [name for name in used if header.count(name) > 1]
    if twice:
        # Names match ignoring case, so ``T1`` and ``t1`` would be one column read from either.
        spelled = [cell.strip() for cell in rows[0] if cell.strip().lower() == twice[0]]
        raise InputError(
            f"case list {path}: the header has the column {twice[0]} {len(spelled)} times "
            f"({', '.join(spelled)}; column names match ignoring case); keep one of them."
        )
    if channels:
        return _channel_cases(path, rows, header, channels)
    missing = [name for name in REQUIRED if name not in header]
    if not any(name in header for name in SOURCES):
        missing.append("path (or study_uid)")
    if missing:
        raise InputError(
            f"case list {path}: no column {', '.join(missing)} in the header {rows[0]}; the "
            "columns are case_id, path or study_uid, and optionally mask and label."
        )
    column = {name: header.index(name) for name in ("case_id", "path", "study_uid", "mask",
              "label") if name in header}  # fmt: skip
    base = path.parent.resolve()
    cases: list[Case] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for line, cell in _data_rows(rows, column):
        case_id, where, study_uid = cell("case_id"), cell("path"), cell("study_uid")
        if not case_id or bool(where) == bool(study_uid):
            problems.append(f"line {line}: give case_id and one of path or study_uid")
            continue
        if study_uid and (len(study_uid) > 64 or not UID.fullmatch(study_uid)):
            problems.append(f"line {line}: study_uid {study_uid!r} is not a DICOM UID")
            continue
        problem = _id_problem(case_id, line, seen)
        if problem:
            problems.append(problem)
            continue
        mask = cell("mask")
        cases.append(
            Case(
                case_id,
                _resolve(where, base) if where else Path(study_uid),
                format=None if where else "pacs",
                mask=_resolve(mask, base) if mask else None,
                label=cell("label") or None,
                study_uid=study_uid or None,
            )
        )
    return _checked(path, cases, problems)


def _channel_cases(
    path: Path, rows: list[list[str]], header: list[str], channels: tuple[str, ...]
) -> list[Case]:
    """The multi-sequence cases of a list whose image columns are ``channels``."""
    missing = [name for name in ("case_id", *channels) if name.lower() not in header]
    if missing:
        raise InputError(
            f"case list {path}: no column {', '.join(missing)} in the header {rows[0]}; "
            "preprocessing.channels names the image columns, so the list needs case_id and "
            f"{', '.join(channels)} (optionally mask and label)."
        )
    column = {name: header.index(name.lower()) for name in ("case_id", "mask", "label", *channels)
              if name.lower() in header}  # fmt: skip
    base = path.parent.resolve()
    cases: list[Case] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for line, cell in _data_rows(rows, column):
        case_id = cell("case_id")
        empty = [name for name in channels if not cell(name)]
        if not case_id or empty:
            problems.append(f"line {line}: give case_id and a file in every channel column "
                            f"(empty: {', '.join(empty) or 'case_id'})")  # fmt: skip
            continue
        problem = _id_problem(case_id, line, seen)
        if problem:
            problems.append(problem)
            continue
        files = tuple(ChannelFile(name, _resolve(cell(name), base)) for name in channels)
        mask = cell("mask")
        cases.append(
            Case(
                case_id,
                files[0].path,
                format=None,
                mask=_resolve(mask, base) if mask else None,
                label=cell("label") or None,
                channels=files,
            )
        )
    return _checked(path, cases, problems)


def _data_rows(
    rows: list[list[str]], column: dict[str, int]
) -> Iterator[tuple[int, Callable[[str], str]]]:
    """Each non-blank row below the header: its line number and a getter of a named column's
    stripped cell ("" when the row is short or the column absent)."""
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue

        def cell(name: str, row: list[str] = row) -> str:
            index = column.get(name)
            return row[index].strip() if index is not None and index < len(row) else ""

        yield line, cell


def _checked(path: Path, cases: list[Case], problems: list[str]) -> list[Case]:
    """``cases``, or one InputError naming every problem of the list (or that it has no case)."""
    if problems:
        raise InputError(f"case list {path}: " + "; ".join(problems) + ".")
    if not cases:
        raise InputError(f"case list {path}: no cases below the header row.")
    return cases


def _id_problem(case_id: str, line: int, seen: dict[str, int]) -> str | None:
    """What is wrong with ``case_id`` on ``line`` (unsafe characters, a repeat), or None; a
    good id is added to ``seen``."""
    if safe_id(case_id) != case_id:
        return (
            f"line {line}: case id {case_id!r} has characters unsafe in file names; use "
            f"letters, digits, '.', '_' and '-' (e.g. {safe_id(case_id)!r})"
        )
    if case_id in seen:
        return f"line {line}: case id {case_id!r} repeats line {seen[case_id]}"
    seen[case_id] = line
    return None


def _resolve(text: str, base: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path
