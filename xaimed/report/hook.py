"""The one call ``explain``, ``merge`` and ``evaluate`` make at their end."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("xaimed.report")


def refresh_report(
    manifest: Path, *, evaluation_dir: Path | None = None, skip: bool = False
) -> Path | None:
    """Rewrite the report of the run whose manifest is ``manifest`` (in ``RUN/report``) when
    the run's config asks for one (``outputs.report``, on by default). Returns the index page,
    or None when no report was written.

    Nothing is written when ``skip`` (a dry run, an interrupted run), or when ``manifest`` is a
    shard's manifest or does not exist: the report of a sharded run is written by
    ``xaimed merge``. The maps are the command's result and are already written, so a report
    that cannot be written is one warning line and never fails the command.
    """
    if skip or manifest.name != "manifest.csv" or not manifest.is_file():
        return None
    from xaimed.errors import XaimedError
    from xaimed.report.build import build_report, report_settings

    run = manifest.parent
    try:
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if not report_settings(config if isinstance(config, dict) else {})[0]:
        return None
    try:
        result = build_report(run, evaluation_dir=evaluation_dir)
    except (XaimedError, OSError, ValueError) as exc:
        log.warning(
            "%s: the HTML report was not written (%s); write it with `xaimed report %s`.",
            run, exc, run,
        )  # fmt: skip
        return None
    for note in result.notes:
        log.warning("report: %s", note)
    log.info("report: %s", result.index)
    return result.index
