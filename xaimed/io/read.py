"""Read a case into a Volume, whatever its format (through its :mod:`xaimed.io.readers` reader)."""

from __future__ import annotations

from xaimed.config import Config
from xaimed.errors import InputError
from xaimed.io.case import Case
from xaimed.io.channels import read_channels
from xaimed.io.readers import READERS
from xaimed.io.safety import require_readable_kind
from xaimed.volume import Volume


def read_case(case: Case, config: Config) -> Volume:
    """The Volume of ``case``: its NIfTI file, or the chosen series of its DICOM study; a
    multi-sequence case's channel files stacked on axis 3 (:mod:`xaimed.io.channels`)."""
    if case.channels:
        return read_channels(case, config, lambda one: read_case(one, config))
    if case.format is None:
        case = resolve_listed(case)
    reader = READERS.get(case.format)
    if reader is None:
        raise InputError(
            f"case {case.case_id}: no reader for format {case.format!r}; "
            f"known: {', '.join(READERS)}."
        )
    return reader.read(case, config)


def resolve_listed(case: Case) -> Case:
    """A case-list entry as a case of the first format that recognises its path."""
    if not case.path.exists():
        raise InputError(
            f"case {case.case_id}: {case.path} does not exist; fix its path in the case list."
        )
    require_readable_kind(case.path, f"case {case.case_id}")
    for reader in READERS.values():
        located = reader.locate(case)
        if located is not None:
            return located
    raise InputError(
        f"case {case.case_id}: {case.path} is not a format xaimed reads "
        f"({', '.join(READERS)}); fix its path in the case list."
    )
