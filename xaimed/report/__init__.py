"""The HTML report of a run: an index of every case and method, and a case page with a 3D
viewer (NiiVue, bundled), written as a static folder that works offline from ``file://``.

``build_report`` writes it; ``refresh_report`` is what ``explain``, ``merge`` and ``evaluate``
call at their end (it follows ``outputs.report`` and never fails the command). Both are
imported on first use, so importing this package costs nothing at start-up.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ReportResult", "build_report", "refresh_report"]


def __getattr__(name: str) -> Any:
    if name in ("ReportResult", "build_report"):
        from xaimed.report import build

        return getattr(build, name)
    if name == "refresh_report":
        from xaimed.report.hook import refresh_report

        return refresh_report
    raise AttributeError(f"module 'xaimed.report' has no attribute {name!r}")
