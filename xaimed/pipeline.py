"""The library entry point behind ``xaimed explain``: run every configured method on every case.

:func:`explain` hands the cohort to :mod:`xaimed.run.cohort` (shards, resume, executors,
manifest); a :class:`xaimed.run.worker.Explainer` does the work of one case in one process. One
case failing (unreadable file, wrong shape, a method that cannot run) is recorded in the manifest
with its reason and the run goes on; only a config or model that cannot be used at all stops the
run.
"""

from __future__ import annotations

from pathlib import Path

from xaimed.config import Config, load_config, with_overrides
from xaimed.progress import LogReporter, Reporter
from xaimed.run.options import RunOptions
from xaimed.run.result import RunResult

__all__ = ["RunResult", "explain", "run_config"]


def run_config(
    config: Config | str | Path, methods: list[str] | None = None, device: str | None = None
) -> Config:
    """The config a run uses: loaded, and with ``--method`` / ``--device`` a new validated one."""
    if not isinstance(config, Config):
        config = load_config(config)
    return with_overrides(config, methods=methods, device=device)


def explain(
    input_path: str | Path,
    config: Config | str | Path,
    out_dir: str | Path,
    *,
    methods: list[str] | None = None,
    device: str | None = None,
    reporter: Reporter | None = None,
    options: RunOptions | None = None,
) -> RunResult:
    """Explain every case under ``input_path`` with every configured method.

    ``input_path`` is a NIfTI file, a DICOM file, a folder (searched recursively) or a CSV/TSV
    case list. ``config`` is a validated Config or the path of a YAML file. ``methods`` (names)
    replaces the config's method list with those methods at their default parameters; ``device``
    overrides ``runtime.device``. ``options`` chooses the shard, resume behaviour, executor and
    devices (see :class:`xaimed.run.cohort.RunOptions`; the default runs everything here and
    skips work an earlier run finished). Writes per case and method a NIfTI map, a JSON sidecar
    and a PNG under ``out_dir/<case_id>/``, and the shard's manifest. Raises XaimedError only
    when nothing can run (bad config, model or input path); per-case failures are in the rows.
    """
    from xaimed.run.cohort import run_cohort

    return run_cohort(
        Path(input_path),
        run_config(config, methods, device),
        Path(out_dir),
        options or RunOptions(),
        reporter or LogReporter(),
    )
