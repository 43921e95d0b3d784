"""File names of outputs."""

from __future__ import annotations

import re


def file_part(text: str) -> str:
    """``text`` made safe as part of a file name (method ids, class names)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"
