"""``xaimed evaluate``: read an explain run, compute the configured metrics, write the report.

Works over the run's outputs: ``manifest.csv`` (which maps exist), each map's NIfTI and sidecar
(its target), and the run's config (``config.json`` unless another config is given). Maps and
predictions are reused as stored; the model is loaded again only where a metric must run it:
faithfulness curves (batched perturbations), the randomisation cascade (one re-explanation per
step), robustness (one per noise draw) and checkpoint agreement (one per checkpoint).

Each kind of metric is a module registered in :data:`xaimed.evaluate.settings.METRICS` (the
:class:`xaimed.evaluate.metric.Metric` protocol); the runner opens each case once, reads its
maps once, and hands them to every kind in turn. A metric that cannot run for one case and
method is recorded as a failure and the evaluation goes on; only an unusable run folder, config
or model stops it.

Each case's results are recorded per metric kind as they finish (:mod:`xaimed.evaluate.records`),
with the kind's wall time: a rerun skips what is recorded under the same key, and a stop request
(SIGTERM/SIGINT through a :class:`StopFlag`) ends the evaluation after the kind in flight, with
metrics.csv and evaluation.json written for what is done.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xaimed.casepath import OpenCase
from xaimed.config import Config, EvaluateSection, MethodEntry, load_config, with_overrides
from xaimed.errors import ConfigError, InputError, XaimedError
from xaimed.evaluate.masks import read_mask
from xaimed.evaluate.memory import keep_freed_memory
from xaimed.evaluate.metric import CaseWork, StoredMap, load_metric
from xaimed.evaluate.passmodel import pass_model
from xaimed.evaluate.records import (
    KindRecord,
    load_records,
    record_key,
    record_path,
    save_records,
)
from xaimed.evaluate.report import summarise, write_json, write_metrics_csv
from xaimed.evaluate.session import (
    Scorer,
    build_scorer,
    case_of_run,
    channels_last,
    load_checkpoint,
    open_case,
)
from xaimed.evaluate.settings import METRICS
from xaimed.evaluate.threads import cpu_threads
from xaimed.io.image import read_image_arrays
from xaimed.methods import registry
from xaimed.model import LoadedModel, load_model, resolve_device
from xaimed.progress import LogReporter, Reporter
from xaimed.report.hook import refresh_report
from xaimed.run.records import check_outputs
from xaimed.run.signals import RunInterrupted, StopFlag
from xaimed.writers.manifest import ManifestRow, read_manifest, relative_paths

log = logging.getLogger("xaimed")


@dataclass
class EvaluationResult:
    """What an evaluation computed and where it wrote it."""

    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    curves: list[dict[str, Any]] = field(default_factory=list)
    cascades: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    interrupted: bool = False
    skipped: int = 0  # case x kind pairs reused from an earlier run's records
    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    @property
    def metrics_csv(self) -> Path:
        """Path of metrics.csv."""
        return self.out_dir / "metrics.csv"

    @property
    def summary_json(self) -> Path:
        """Path of the JSON summary."""
        return self.out_dir / "evaluation.json"

    def values(self, metric: str, method: str | None = None) -> dict[str, float]:
        """``{case_id: value}`` of one metric (and method), for scripts and tests."""
        return {
            r["case_id"]: r["value"]
            for r in self.rows
            if r["metric"] == metric and (method is None or r["method"] == method)
        }


@dataclass
class _Evaluation:
    """State shared by the cases of one evaluation."""

    config: Config
    settings: EvaluateSection
    metrics: tuple[str, ...]
    loaded: LoadedModel
    scorer: Scorer
    result: EvaluationResult
    shuffled: LoadedModel | None = None
    checkpoints: list[LoadedModel] = field(default_factory=list)
    folded: torch.nn.Module | None = None
    overwrite: bool = False
    reporter: Reporter = field(default_factory=LogReporter)
    stop: StopFlag = field(default_factory=StopFlag)
    # The run folder evaluated: its completion records hold the hashes its maps are checked by.
    run_dir: Path = field(default_factory=Path)


def _manifest(run_dir: Path) -> list[ManifestRow]:
    path = run_dir / "manifest.csv"
    if not path.is_file():
        raise InputError(
            f"{run_dir}: no manifest.csv, so not an explain run; give the folder that "
            "`xaimed explain --out` wrote."
        )
    rows = read_manifest(path)  # the run's own files, wherever the folder now is
    ok = [r for r in rows if r["status"] == "ok" and r["nifti"] and r["target"] != "dominant"]
    if not ok:
        raise InputError(
            f"{path}: no successful map with a NIfTI file to evaluate; run `xaimed explain` "
            "with outputs.nifti: true."
        )
    return ok


def _config(run_dir: Path, config: Config | str | Path | None) -> Config:
    if isinstance(config, Config):
        return config
    if config is None:
        config = run_dir / "config.json"
        if not config.is_file():
            raise InputError(f"{run_dir}: no config.json; give the run's config with --config.")
    return load_config(config)  # JSON is YAML, so the run's config.json reads as one


def _check_method_ids(settings: EvaluateSection, ids: set[str]) -> None:
    problems = [
        f"evaluate.{key}.methods: {m!r} is not a method of this run ({sorted(ids)})"
        for key in ("sanity", "robustness")
        for m in settings.of(key).methods or []
        if m not in ids
    ]
    if problems:
        summary = problems[0] if len(problems) == 1 else f"{len(problems)} problems in evaluate"
        raise ConfigError(summary + "; list methods by their id in the manifest.", problems)


def evaluate(
    run_dir: str | Path,
    config: Config | str | Path | None = None,
    *,
    out_dir: str | Path | None = None,
    metrics: list[str] | None = None,
    device: str | None = None,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    stop: StopFlag | None = None,
) -> EvaluationResult:
    """Evaluate the maps of an explain run and write metrics.csv, evaluation.json and plots.

    ``config`` defaults to the run's ``config.json``; its ``evaluate`` section says what to
    compute. ``metrics`` (kinds, e.g. ``["localisation"]``) replaces ``evaluate.metrics``;
    ``out_dir`` defaults to the run folder. Case x kind pairs recorded by an earlier evaluation
    with the same key are reused unless ``overwrite``. When ``stop`` is set the evaluation ends
    after the kind in flight and ``result.interrupted`` is True. Raises XaimedError when nothing
    can be evaluated; failures of single cases or metrics are listed in the result.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{run}: no such run folder; give the folder `xaimed explain` wrote.")
    rows = _manifest(run)
    cfg = with_overrides(_config(run, config), device=device)
    settings = cfg.evaluate
    chosen = tuple(metrics or settings.metrics)
    unknown = [m for m in chosen if m not in METRICS]
    if unknown:
        raise ConfigError(
            f"--metric {', '.join(unknown)}: unknown; choose from {', '.join(METRICS)}."
        )
    _check_method_ids(settings, {r["method"] for r in rows})
    # On the CPU the idle cores, unless runtime.threads says.
    on_cpu = resolve_device(cfg.runtime.device).type == "cpu"
    with cpu_threads(cfg.runtime.threads, adapt=on_cpu):
        return _evaluate(run, rows, cfg, chosen, out_dir, overwrite, reporter, stop)


def _evaluate(
    run: Path,
    rows: list[ManifestRow],
    cfg: Config,
    chosen: tuple[str, ...],
    out_dir: str | Path | None,
    overwrite: bool,
    reporter: Reporter | None,
    stop: StopFlag | None,
) -> EvaluationResult:
    settings = cfg.evaluate
    keep_freed_memory()  # the passes below reuse pages instead of faulting in fresh ones
    torch_device = resolve_device(cfg.runtime.device)
    loaded = channels_last(load_model(cfg.model, torch_device))
    scorer = build_scorer(loaded.module, cfg, is_script=loaded.is_script)
    out = Path(out_dir) if out_dir is not None else run
    folded = None if loaded.is_script else pass_model(loaded.module)
    ev = _Evaluation(cfg, settings, chosen, loaded, scorer, EvaluationResult(out),
                     folded=None if folded is loaded.module else folded,
                     overwrite=overwrite, reporter=reporter or LogReporter(eta_of=""),
                     stop=stop or StopFlag(), run_dir=run)  # fmt: skip
    checkpoint = settings.of("sanity").randomised_labels_checkpoint
    if "sanity" in chosen and checkpoint is not None:
        key = "evaluate.sanity.randomised_labels_checkpoint"
        ev.shuffled = load_checkpoint(cfg.model, checkpoint, torch_device, key)
    if "agreement" in chosen:
        ev.checkpoints = [
            load_checkpoint(cfg.model, p, torch_device, "evaluate.agreement.checkpoints")
            for p in settings.of("agreement").checkpoints
        ]
    by_case: dict[str, list[ManifestRow]] = defaultdict(list)
    for row in rows:
        by_case[row["case_id"]].append(row)
    ev.reporter.start(len(by_case) * len(chosen), cases=len(by_case))
    for case_id, case_rows in by_case.items():
        if ev.stop.requested:
            ev.result.interrupted = True
            break
        ev.reporter.step(f"{case_id} ({len(case_rows)} maps)")
        _evaluate_case(ev, case_id, case_rows)
        ev.reporter.case_done(f"{case_id} evaluated")
    ev.reporter.finish()
    ev.result.interrupted = ev.result.interrupted or ev.stop.requested
    _write(ev)
    refresh_report(run / "manifest.csv", evaluation_dir=out)
    return ev.result


def _entry(config: Config, method_id: str) -> MethodEntry:
    for entry in config.methods:
        if entry.output_id == method_id:
            return entry
    if registry.find(method_id) is not None:
        return MethodEntry(name=method_id)
    raise ConfigError(
        f"method {method_id!r} of the run is neither in the config's methods nor a registered "
        "method; evaluate with the config the run used."
    )


def _read_map(row: ManifestRow, config: Config, model_sha256: str) -> StoredMap:
    try:
        sidecar = json.loads(Path(row["sidecar"]).read_text(encoding="utf-8"))
        data = read_image_arrays(Path(row["nifti"]))[0]
        if data.ndim == 2:  # a 2D image's map: a plane of depth 1, as xaimed holds 2D images
            data = data[..., None]
    except (OSError, ValueError) as exc:
        raise InputError(
            f"case {row['case_id']}: cannot read the map {row['nifti']} or its sidecar ({exc}); "
            "re-run `xaimed explain`."
        ) from None
    made_with = (sidecar.get("model") or {}).get("sha256")
    if made_with is not None and made_with != model_sha256:
        # Re-explaining or perturbing with another model than the map's would compare apples
        # with pears without any visible sign.
        raise InputError(
            f"case {row['case_id']} {row['method']}: the map was made by the model with SHA-256 "
            f"{made_with[:12]}… but the config loads {model_sha256[:12]}…; evaluate with the "
            "run's model (its config.json)."
        )
    return StoredMap(
        row["method"], _method_of(sidecar, config, row["method"]),
        int(sidecar["target"]["index"]), row["target"], data,
    )  # fmt: skip


def _method_of(sidecar: dict[str, Any], config: Config, method_id: str) -> MethodEntry:
    # The sidecar records the method exactly as the map was made (parameters with defaults,
    # post-processing), also when `--method` replaced the config's list; re-explaining from it
    # reproduces the map whatever config the evaluation is given.
    record = sidecar.get("method")
    if isinstance(record, dict) and "name" in record:
        return MethodEntry.model_validate(
            {"name": record["name"], "id": record.get("id", method_id),
             "params": record.get("params", {}), "postprocess": record.get("postprocess", {})}
        )  # fmt: skip
    return _entry(config, method_id)


def _mask(ev: _Evaluation, case: OpenCase) -> np.ndarray | None:
    template = ev.settings.masks
    if template is None:
        return None
    try:
        path = Path(template.format(case_id=case.case_id))
    except (KeyError, IndexError, ValueError):
        raise ConfigError(
            f"evaluate.masks: {template!r} may only use the placeholder {{case_id}}; fix the path."
        ) from None
    if not path.is_file():
        return None  # a case without a mask (a healthy case) has no localisation metrics
    return read_mask(path, case.prepared.source, case.case_id)


def _evaluate_case(ev: _Evaluation, case_id: str, rows: list[ManifestRow]) -> None:
    # The metrics list is left out of the key: evaluating one kind now and another later
    # reuses the first.
    settings = ev.settings.model_dump(mode="json", exclude={"metrics"})
    # Output paths relative to the run: a moved or copied run keeps its evaluation records.
    key = record_key([relative_paths(r, ev.run_dir) for r in rows], settings, ev.loaded.sha256,
                     ev.config.runtime.seed)  # fmt: skip
    path = record_path(ev.result.out_dir, case_id)
    records = {} if ev.overwrite else load_records(path, key)
    todo = [kind for kind in ev.metrics if kind not in records]
    for kind in ev.metrics:
        if kind in records:
            _take(ev, kind, records[kind])
            ev.result.skipped += 1
            ev.reporter.advance(f"{case_id} {kind}: done earlier, skipped")
    if not todo:
        return
    # One opened case and one read of its maps for every kind (and every map's ranks, once).
    try:
        case = open_case(case_of_run(rows[0]), ev.config, ev.scorer, ev.loaded.device,
                         ev.loaded.prepare)  # fmt: skip
        for row in rows:
            check_outputs(ev.run_dir, row)
        maps = [_read_map(row, ev.config, ev.loaded.sha256) for row in rows]
        mask = _mask(ev, case) if "localisation" in todo else None
    except XaimedError as exc:
        ev.result.failures.append(str(exc))
        for _ in todo:
            ev.reporter.advance(f"{case_id}: {exc}", failed=True)
        return
    usable = []
    for m in maps:
        if m.data.shape != case.prepared.source.spatial_shape:
            ev.result.failures.append(
                f"case {case_id} {m.method}: the map's shape {m.data.shape} is not the source's "
                f"{case.prepared.source.spatial_shape}; re-run `xaimed explain`."
            )
        else:
            usable.append(m)
    for kind in todo:
        if ev.stop.requested:
            return  # what is recorded stays; the rest is done by the next run
        work = CaseWork(kind, case, usable, ev.config, ev.scorer, ev.loaded, ev.stop, mask,
                        ev.shuffled, ev.checkpoints, ev.folded)  # fmt: skip
        t0 = time.perf_counter()
        try:
            load_metric(kind).compute(work, ev.settings.of(kind))
        except RunInterrupted:
            # A kind that re-explains (sanity, robustness, agreement) can take minutes per case:
            # its partial results are discarded rather than waited for; the rerun redoes it.
            return
        record = KindRecord(key, time.perf_counter() - t0, work.rows, work.curves,
                            work.cascades, work.failures)  # fmt: skip
        _take(ev, kind, record)
        records[kind] = record
        save_records(path, case_id, records)
        ev.reporter.advance(
            f"{case_id} {kind}: {len(record.rows)} value(s) in {record.seconds:.1f} s",
            failed=bool(record.failures),
        )


def _take(ev: _Evaluation, kind: str, record: KindRecord) -> None:
    """Add a kind's results for one case (computed now or recorded earlier) to the evaluation."""
    ev.result.rows.extend(record.rows)
    ev.result.curves.extend(record.curves)
    ev.result.cascades.extend(record.cascades)
    ev.result.failures.extend(record.failures)
    ev.result.seconds[kind].append(record.seconds)


def _write(ev: _Evaluation) -> None:
    from xaimed.evaluate import plots

    result, settings = ev.result, ev.settings
    warnings = {}
    for method in {r["method"] for r in result.rows if " vs " not in r["method"]}:
        info = registry.find(_entry(ev.config, method).name)
        if info is not None and info.warning:
            warnings[method] = info.warning
    result.summary = summarise(
        result.rows,
        confidence=settings.confidence,
        threshold=settings.of("sanity").spearman_threshold,
        warnings=warnings,
        seed=ev.config.runtime.seed,
    )
    result.summary["failures"] = result.failures
    # What each kind costs, so users can choose: wall time per case over every map of the case
    # (reused records keep the time they took when computed).
    result.summary["cost"] = {
        kind: {
            "cases": len(times),
            "seconds_per_case": sum(times) / len(times),
            "seconds_total": sum(times),
        }
        for kind, times in result.seconds.items()
        if times
    }
    result.summary["complete"] = not result.interrupted
    write_metrics_csv(result.rows, result.metrics_csv)
    write_json(
        {**result.summary, "curves": result.curves, "cascades": result.cascades},
        result.summary_json,
    )
    if result.curves:
        result.plots.append(
            plots.plot_curves(result.curves, result.out_dir / "evaluation_curves.png")
        )
    if result.cascades:
        result.plots.append(
            plots.plot_cascade(
                result.cascades, settings.of("sanity").spearman_threshold,
                result.out_dir / "evaluation_cascade.png",
            )
        )  # fmt: skip
    # Pairwise agreement ("a vs b") alone has no method-by-metric table to draw.
    if any(" vs " not in method for method in result.summary["metrics"]):
        result.plots.append(
            plots.plot_heatmap(result.summary, result.out_dir / "evaluation_table.png")
        )
