"""The report's data as plain JSON-able structures: the index (summary, grid, failures,
warnings) and one record per case. Identifiers are dropped here, before anything is written."""

from __future__ import annotations

import math
import re
from typing import Any

from xaimed import __version__
from xaimed.report.rundata import MapEntry, RunData

# Case states, worst first: a case is in the first state any of its rows is in.
_STATE_ORDER = ("failed", "interrupted", "pending", "not_run")

# Sidecar keys (at any depth) that can identify a patient or a study.
_IDENTIFYING_KEYS = ("patient", "birth", "uid", "accession", "institution", "physician")
# A DICOM UID in free text (messages name the series they are about): a root of 0, 1 or 2, two
# or more numeric components (2.25.<128-bit number> has two), at least 10 characters in all, so
# version numbers (0.1.0, 2.13.0) are left alone.
# A UID may end a sentence or a file name (PACS files are named <SOP Instance UID>.dcm): a
# following dot ends it unless a digit comes after the dot.
_UID_TEXT = re.compile(r"(?<![\d.])(?=[\d.]{10,})[012](?:\.\d+){2,}(?!\d|\.\d)")


def column_key(entry: MapEntry, multi_target: bool) -> str:
    """The grid column of a row: its method, and its target when a run explains several."""
    return f"{entry.method}:{entry.target}" if multi_target and entry.target else entry.method


def channel_key(column: str, channel: str) -> str:
    """The viewer key of one channel's part of the map in grid column ``column``."""
    return f"{column}/{channel}"


def case_state(entries: list[MapEntry]) -> str:
    """ok, skipped (every row done by an earlier run), or the worst unfinished state."""
    statuses = {e.status for e in entries}
    for state in _STATE_ORDER:
        if state in statuses:
            return state
    if entries and all(e.row.get("resumed") == "yes" for e in entries):
        return "skipped"
    return "ok"


def scrub(value: Any, identifiers: bool) -> Any:
    """``value`` without keys that can identify a patient (unless ``identifiers``)."""
    if identifiers:
        return value
    if isinstance(value, dict):
        return {
            k: scrub(v, identifiers)
            for k, v in value.items()
            if not any(word in k.lower() for word in _IDENTIFYING_KEYS)
        }
    if isinstance(value, list):
        return [scrub(v, identifiers) for v in value]
    return value


def redact(text: str, sources: list[str], identifiers: bool) -> str:
    """``text`` with each of ``sources`` (paths of source images) and their folders replaced
    by ``<source>`` / ``<source folder>``, and DICOM UIDs by ``<UID>``, unless ``identifiers``:
    error messages name the file and series they are about, and file names often carry patient
    names or record numbers."""
    if identifiers or not text:
        return text
    text = _UID_TEXT.sub("<UID>", text)
    for source in sorted(sources, key=len, reverse=True):
        if source and source in text:
            text = text.replace(source, "<source>")
    for source in sources:
        folder = source.rsplit("/", 1)[0] if "/" in source else ""
        if folder and folder in text:
            text = text.replace(folder, "<source folder>")
    return text


def provenance(sidecar: dict[str, Any], identifiers: bool) -> dict[str, Any]:
    """The sidecar as the case page shows it: the source's path (file names often carry
    patient names or record numbers) and identifying keys are dropped unless ``identifiers``."""
    shown = dict(sidecar)
    if not identifiers and isinstance(shown.get("source"), dict):
        shown["source"] = {k: v for k, v in shown["source"].items() if k != "path"}
    return scrub(shown, identifiers)


def _number(cell: float | str | None) -> float | None:
    # Manifest rows hold numbers (read_manifest); metrics and other CSV cells hold text.
    try:
        value = float(cell if cell is not None else "")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _columns(data: RunData) -> list[dict[str, str]]:
    seen: dict[str, dict[str, str]] = {}
    for e in data.entries:
        key = column_key(e, data.multi_target)
        seen.setdefault(key, {"key": key, "method": e.method, "target": e.target})
    return list(seen.values())


def summary(data: RunData) -> dict[str, Any]:
    """The run summary of the index page."""
    by_case: dict[str, list[MapEntry]] = {}
    for e in data.entries:
        by_case.setdefault(e.case_id, []).append(e)
    states: dict[str, int] = {}
    for entries in by_case.values():
        state = case_state(entries)
        states[state] = states.get(state, 0) + 1
    first = next((data.sidecar(e) for e in data.entries if e.status == "ok"), {})
    model = first.get("model", {}) if isinstance(first.get("model"), dict) else {}
    model_cfg = data.config.get("model", {}) if isinstance(data.config.get("model"), dict) else {}
    model_name = (
        model.get("class") or model_cfg.get("architecture") or model_cfg.get("weights") or ""
    )
    software = first.get("software", {}) if isinstance(first.get("software"), dict) else {}
    return {
        "model": str(model_name),
        "model_file": str(model.get("file", "")).rsplit("/", 1)[-1],
        "model_sha256": str(model.get("sha256", "")),
        "config_sha256": str(first.get("config_sha256", "")),
        "methods": data.methods,
        "cases": len(by_case),
        "maps": len(data.entries),
        "states": states,
        "compute_s": round(sum(_number(e.row.get("wall_s")) or 0.0 for e in data.entries), 1),
        "xaimed_run": str(software.get("xaimed", "")),
        "xaimed_report": __version__,
        "device": str(first.get("device", "")),
        "evaluated": data.evaluation is not None or bool(data.metrics),
    }


def failures(data: RunData, identifiers: bool) -> list[dict[str, str]]:
    """Every failed row with its one-sentence reason."""
    return [
        {"case_id": e.case_id, "column": column_key(e, data.multi_target),
         "type": e.row.get("error_type", ""),
         "error": redact(e.row.get("error", ""), [e.row.get("source", "")], identifiers)}
        for e in data.entries
        if e.status == "failed"
    ]  # fmt: skip


def warnings(data: RunData, notes: list[str], identifiers: bool) -> list[dict[str, str]]:
    """Method warnings (manifest), the evaluation's warnings and failures, the report's notes."""
    out: dict[tuple[str, str], None] = {}
    for e in data.entries:
        if e.row.get("warning"):
            out[(e.method, e.row["warning"])] = None
    if data.evaluation:
        for method, text in (data.evaluation.get("warnings") or {}).items():
            out[(str(method), str(text))] = None
        for text in data.evaluation.get("failures") or []:
            out[("evaluate", str(text))] = None
    sources = list({e.row.get("source", "") for e in data.entries})
    for text in notes:
        out[("report", redact(text, sources, identifiers))] = None
    return [{"source": s, "text": t} for s, t in out]


def index_data(
    data: RunData, thumbs: dict[tuple[str, str], str], notes: list[str], identifiers: bool
) -> dict:
    """Everything the index page shows. Cells are short lists to keep a 25,000-cell grid
    small: [status, thumbnail or "", error index or -1, warning index or -1, metric values]."""
    columns = _columns(data)
    col_index = {c["key"]: i for i, c in enumerate(columns)}
    metric_names = data.metric_names
    errors: dict[str, int] = {}
    warns: dict[str, int] = {}
    cases: dict[str, dict[str, Any]] = {}
    for e in data.entries:
        case = cases.setdefault(
            e.case_id,
            {"id": e.case_id, "label": e.row.get("label", ""), "pred": "", "prob": None,
             "entries": [], "cells": [None] * len(columns)},
        )  # fmt: skip
        case["entries"].append(e)
        if e.status == "ok" and not case["pred"]:
            case["pred"] = e.row.get("predicted_class", "")
            case["prob"] = _number(e.row.get("probability"))
        error = redact(e.row.get("error", ""), [e.row.get("source", "")], identifiers)
        warning = e.row.get("warning", "")
        values = data.metrics.get((e.case_id, e.method, e.target), {})
        case["cells"][col_index[column_key(e, data.multi_target)]] = [
            e.status,
            thumbs.get((e.case_id, column_key(e, data.multi_target)), ""),
            errors.setdefault(error, len(errors)) if error else -1,
            warns.setdefault(warning, len(warns)) if warning else -1,
            [_round(values.get(m)) for m in metric_names],
        ]
    rows = [
        [c["id"], c["label"], c["pred"], _round(c["prob"]), case_state(c["entries"]), c["cells"]]
        for c in cases.values()
    ]
    return {
        "summary": summary(data),
        "columns": columns,
        "metrics": metric_names,
        "errors": list(errors),
        "warningTexts": list(warns),
        "cases": rows,
        "failures": failures(data, identifiers),
        "warnings": warnings(data, notes, identifiers),
        "evaluation": _evaluation_table(data),
    }


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.5g}")


def _evaluation_table(data: RunData) -> list[dict[str, Any]]:
    """Cohort means with their intervals, per method and metric, from evaluation.json."""
    if not data.evaluation:
        return []
    table = []
    metrics = data.evaluation.get("metrics") or {}
    if not isinstance(metrics, dict):
        return []
    for method, by_metric in metrics.items():
        if not isinstance(by_metric, dict):
            continue
        for metric, stats in by_metric.items():
            if isinstance(stats, dict):
                table.append({
                    "method": str(method), "metric": str(metric), "n": stats.get("n"),
                    "mean": _round(_number(str(stats.get("mean")))),
                    "ci_low": _round(_number(str(stats.get("ci_low")))),
                    "ci_high": _round(_number(str(stats.get("ci_high")))),
                })  # fmt: skip
    return table


def _channel_parts(
    data: RunData, entry: MapEntry, key: str, volumes: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The per-channel maps of a map of a multi-channel source: name, share, file and viewer
    volume. ``scale`` is the largest magnitude over the parts, so that the viewer shows them
    on one colour scale and their brightness compares across channels."""
    channels = data.sidecar(entry).get("channels")
    shares = channels.get("shares") if isinstance(channels, dict) else None
    parts = []
    for name, path in data.channel_maps(entry).items():
        share = shares.get(name) if isinstance(shares, dict) else None
        parts.append({
            "key": channel_key(key, name), "name": name, "file": data.shown_path(path),
            "share": _round(_number(share)), "volume": volumes.get(channel_key(key, name)),
        })  # fmt: skip
    shown = [p["volume"] for p in parts if p["volume"]]
    scale = max((max(abs(v["min"]), abs(v["max"])) for v in shown), default=0.0)
    for part in parts:
        part["scale"] = _round(scale) or None
    return parts


def case_record(
    data: RunData,
    case_id: str,
    entries: list[MapEntry],
    volumes: dict[str, dict[str, Any]],
    identifiers: bool,
) -> dict[str, Any]:
    """Everything the case page shows for ``case_id``; ``volumes`` maps a column (or
    ``"source"``) to its viewer file and display facts."""
    maps = []
    for e in entries:
        sidecar = data.sidecar(e)
        key = column_key(e, data.multi_target)
        prediction = (
            sidecar.get("prediction") if isinstance(sidecar.get("prediction"), dict) else {}
        )
        maps.append({
            "key": key, "method": e.method, "target": e.target, "status": e.status,
            "error_type": e.row.get("error_type", ""),
            "error": redact(e.row.get("error", ""), [e.row.get("source", "")], identifiers),
            "warning": e.row.get("warning", ""),
            "predicted_class": e.row.get("predicted_class", ""),
            "probability": _round(_number(e.row.get("probability"))),
            "prediction": prediction,
            "volume": volumes.get(key),
            "metrics": {k: _round(v) for k, v in
                        data.metrics.get((e.case_id, e.method, e.target), {}).items()},
            "curves": data.curves.get((e.case_id, e.method, e.target), {}),
            "provenance": provenance(sidecar, identifiers),
            "channels": _channel_parts(data, e, key, volumes),
        })  # fmt: skip
    first = entries[0].row
    record: dict[str, Any] = {
        "id": case_id,
        "label": first.get("label", ""),
        "state": case_state(entries),
        "source": volumes.get("source"),
        "maps": maps,
    }
    if identifiers:
        record["identifiers"] = {k: first.get(k, "") for k in ("source", "series_uid")}
    return record
