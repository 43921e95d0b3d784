"""Relative paths in a config resolve against the config file's folder, during validation.

The folder comes in the validation context (``{"base_dir": ...}``, see
:mod:`xaimed.config.loading`); without one (a config built in code) paths stay as given.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationInfo


def base_dir_of(info: ValidationInfo) -> Path | None:
    """The folder relative paths start from, if the validation was given one."""
    base = (info.context or {}).get("base_dir")
    return None if base is None else Path(base)


def resolve_path(path: Path, info: ValidationInfo) -> Path:
    """``path`` made absolute against the config file's folder (when known)."""
    path = path.expanduser()
    base = base_dir_of(info)
    return path if base is None or path.is_absolute() else (base / path).resolve()
