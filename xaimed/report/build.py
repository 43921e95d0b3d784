"""Write a run's HTML report: a static folder that opens from ``file://`` with no network.

Layout of ``OUT`` (default ``RUN/report``)::

    index.html, case.html        the two pages (case.html?case=<id>)
    assets/                      page scripts and style; NiiVue with its licences
    data/index.js                the index's data (run summary, grid, failures, warnings)
    data/cases/<id>/case.js      one case's data (predictions, provenance, metrics, curves)
    data/cases/<id>/<name>.js    its volumes for the viewer (gzipped NIfTI, base64): the
                                 source, each map and each per-channel map
    thumbs/<id>/<png>            the run's PNG per case and method (linked, or copied)
    evaluation/*.png             the evaluation's cohort pictures, when evaluated
    report.json                  what the report was built from and how (subsampling, privacy)

The new report is written beside the old one and swapped in when complete, so a reader never
sees a half-written report. Volume files of an earlier report are reused when their source
files have not changed (a refresh after ``xaimed evaluate`` rewrites only the data files).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.filebasedimages import ImageFileError

from xaimed.errors import InputError, XaimedError
from xaimed.report.content import case_record, channel_key, column_key, index_data
from xaimed.report.rundata import MapEntry, RunData, read_run
from xaimed.report.volumes import (
    ViewerVolume,
    nifti_bytes,
    read_map,
    read_source,
    stride_for,
    subsample,
    write_volume_script,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_SIZE = 128
# Part of every cached volume's signature: raise it when the volume files or their recorded
# facts change, so that a refresh does not reuse volumes of an older report.
_VOLUME_FORMAT = "v3"


@dataclass
class ReportResult:
    """What was written: the index page, cases, sizes, and notes about cases shown partly."""

    index: Path
    cases: int
    bytes_total: int
    bytes_volumes: int
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_per_case(self) -> float:
        """Report size divided by the number of cases."""
        return self.bytes_total / self.cases if self.cases else 0.0


@dataclass
class _Build:
    data: RunData
    out: Path
    previous: Path | None
    identifiers: bool
    max_size: int
    cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    volume_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_bytes(self, size: int) -> None:
        """Count ``size`` bytes of volume files (cases run on threads)."""
        with self.lock:
            self.volume_bytes += size


def report_settings(config: dict[str, Any]) -> tuple[bool, bool, int]:
    """(write a report, show identifiers, largest viewer axis) from a run's config.json."""
    outputs = config.get("outputs") if isinstance(config.get("outputs"), dict) else {}
    section = config.get("report") if isinstance(config.get("report"), dict) else {}
    return (
        bool(outputs.get("report", True)),
        bool(section.get("identifiers", False)),
        int(section.get("max_size", DEFAULT_MAX_SIZE)),
    )


def build_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    evaluation_dir: str | Path | None = None,
    identifiers: bool | None = None,
    max_size: int | None = None,
) -> ReportResult:
    """Write the HTML report of the run in ``run_dir`` to ``out_dir`` (default
    ``run_dir/report``) and return what was written.

    ``evaluation_dir`` is where ``xaimed evaluate`` wrote (default: the run folder).
    ``identifiers`` and ``max_size`` default to the run config's ``report`` section. Raises
    XaimedError when the run folder has no manifest; a case whose source or map cannot be read
    is shown without it, with a note in the report's warnings.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{run}: no such run folder; give the folder `xaimed explain` wrote.")
    data = read_run(run, Path(evaluation_dir) if evaluation_dir is not None else None)
    _, config_identifiers, config_max = report_settings(data.config)
    out = Path(out_dir) if out_dir is not None else run / "report"
    if out.resolve() == run.resolve():
        raise InputError(f"{out}: the report needs its own folder; give --out another folder.")
    # The old report is replaced whole, so never a folder that holds anything else.
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_report(out))):
        raise InputError(
            f"{out}: exists and is not a report folder; give --out a new or empty folder."
        )
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    build = _Build(
        data, staging, out if (out / "report.json").is_file() else None,
        config_identifiers if identifiers is None else identifiers,
        max(8, config_max if max_size is None else max_size),
    )  # fmt: skip
    try:
        if build.previous is not None:
            build.cache = _previous_volumes(out / "report.json")
        result = _write(build)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap(staging, out)
    result.index = out / "index.html"
    return result


def _is_report(folder: Path) -> bool:
    return (folder / "report.json").is_file() and (folder / "index.html").is_file()


def _previous_volumes(path: Path) -> dict[str, Any]:
    # Only a cache: an unreadable one means every volume is written again.
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    volumes = previous.get("volumes") if isinstance(previous, dict) else None
    return volumes if isinstance(volumes, dict) else {}


def _write(build: _Build) -> ReportResult:
    out, data = build.out, build.data
    _copy_assets(out / "assets")
    thumbs = _thumbnails(build)
    by_case: dict[str, list[MapEntry]] = {}
    for e in data.entries:
        by_case.setdefault(e.case_id, []).append(e)
    # Volumes are most of the work (decompressing maps, compressing copies: zlib releases the
    # GIL), so cases run on threads; records are written here, in manifest order.
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        found = pool.map(lambda item: _case_volumes(build, *item), by_case.items())
        for (case_id, entries), vols in zip(by_case.items(), found, strict=True):
            record = case_record(data, case_id, entries, vols, build.identifiers)
            _write_script(out / "data" / "cases" / case_id / "case.js", "caseData", record)
    data.notes.sort()  # threads add them in any order; by case id, then kind
    evaluation_pictures = _evaluation_pictures(build)
    index = index_data(data, thumbs, build.data.notes, build.identifiers)
    index["evaluationPictures"] = evaluation_pictures
    index["report"] = {"identifiers": build.identifiers, "max_size": build.max_size}
    _write_script(out / "data" / "index.js", "index", index)
    for page in ("index.html", "case.html"):
        shutil.copyfile(_asset(page), out / page)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    (out / "report.json").write_text(
        json.dumps({
            "run": str(data.run_dir.resolve()) if build.identifiers else data.run_dir.name,
            "cases": len(by_case), "maps": len(data.entries),
            "identifiers": build.identifiers, "max_size": build.max_size,
            "bytes": total, "volumes": build.new_cache,
            "notes": [w["text"] for w in index["warnings"] if w["source"] == "report"],
        }, indent=1),
        encoding="utf-8",
    )  # fmt: skip
    return ReportResult(
        out / "index.html", len(by_case), total, build.volume_bytes, build.data.notes
    )


def _asset(name: str) -> Path:
    return Path(str(resources.files("xaimed.report") / "assets" / name))


def _copy_assets(dest: Path) -> None:
    source = _asset("")
    if not (source / "niivue" / "niivue.umd.js").is_file():
        raise InputError(
            f"{source / 'niivue'}: the bundled viewer is missing; reinstall xaimed "
            "(or run scripts/build_niivue.sh in a source checkout)."
        )
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("*.html", "__pycache__"))


def _link_or_copy(source: Path, dest: Path) -> None:
    # A hard link costs nothing for a run of 25,000 PNGs; another file system gets a copy.
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def _thumbnails(build: _Build) -> dict[tuple[str, str], str]:
    thumbs = {}
    for e in build.data.entries:
        png = e.path("png") if e.status == "ok" else None
        if png is None:
            continue
        relative = f"thumbs/{e.case_id}/{png.name}"
        _link_or_copy(png, build.out / relative)
        thumbs[(e.case_id, column_key(e, build.data.multi_target))] = relative
    return thumbs


def _evaluation_pictures(build: _Build) -> list[str]:
    if build.data.evaluation is None:
        return []
    folder = build.data.evaluation_dir
    names = []
    for name in ("evaluation_curves.png", "evaluation_table.png", "evaluation_cascade.png"):
        if (folder / name).is_file():
            _link_or_copy(folder / name, build.out / "evaluation" / name)
            names.append(f"evaluation/{name}")
    return names


def _signature(path: Path, stride: int, extra: str = "") -> str:
    # Hashed: report.json is shared with the report, and the path may name a patient.
    stat = path.stat()
    text = f"{_VOLUME_FORMAT}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stride}|{extra}"
    return hashlib.sha256(text.encode()).hexdigest()


def _reuse(build: _Build, relative: str, signature: str) -> dict[str, Any] | None:
    cached = build.cache.get(relative)
    if build.previous is None or not cached or cached.get("signature") != signature:
        return None
    old = build.previous / relative
    if not old.is_file():
        return None
    _link_or_copy(old, build.out / relative)
    build.new_cache[relative] = cached
    build.add_bytes(old.stat().st_size)
    return dict(cached["info"])


def _case_volumes(build: _Build, case_id: str, entries: list[MapEntry]) -> dict[str, Any]:
    """Write the case's viewer volumes; returns their facts by column (``"source"`` for the
    source image, :func:`channel_key` for each per-channel map)."""
    found: dict[str, Any] = {}
    grid: tuple[Any, ...] | None = None
    for index, e in enumerate(entries):
        nifti = e.path("nifti") if e.status == "ok" else None
        if nifti is None:
            continue
        key = column_key(e, build.data.multi_target)
        shown = _map_volume(build, case_id, nifti, f"data/cases/{case_id}/map{index}.js")
        if shown is None:
            continue
        info, map_grid = shown
        grid = grid or map_grid
        found[key] = info
        channels = build.data.channel_maps(e)
        for number, (channel, path) in enumerate(channels.items()):
            part = _map_volume(build, case_id, path, f"data/cases/{case_id}/map{index}_{number}.js")
            if part is not None:
                found[channel_key(key, channel)] = part[0]
    if grid is not None:
        source_info = _source_volume(build, case_id, entries[0], grid)
        if source_info is not None:
            found["source"] = source_info
    return found


def _map_volume(
    build: _Build, case_id: str, nifti: Path, relative: str
) -> tuple[dict[str, Any], tuple[Any, ...]] | None:
    """Write one map's viewer volume at ``relative`` (or reuse the earlier report's); its facts
    and its grid (shape, affine, stride), or None with a note when the file is unreadable."""
    try:
        array, affine = read_map(nifti)
    except (OSError, ValueError, EOFError, ImageFileError):
        build.data.notes.append(
            f"case {case_id}: map {build.data.shown_path(nifti)} is not a readable image "
            "file; it is left out of "
            "the viewer (run the case again with --overwrite to rewrite it)."
        )
        return None
    stride = stride_for(array.shape, build.max_size)
    grid = (array.shape, affine, stride)
    info = _reuse(build, relative, _signature(nifti, stride))
    if info is None:
        small = subsample(array, affine, stride)
        finite = small.array[small.array == small.array]
        low = float(finite.min()) if finite.size else 0.0
        high = float(finite.max()) if finite.size else 0.0
        signed = low < 0 < high
        payload, step = nifti_bytes(small)
        size = write_volume_script(build.out / relative, relative, payload)
        info = {"file": relative, "min": low, "max": high, "signed": signed,
                "stride": stride, "shape": list(array.shape), "step": step,
                **_geometry(small)}  # fmt: skip
        build.new_cache[relative] = {"signature": _signature(nifti, stride), "info": info}
        build.add_bytes(size)
    return info, grid


def _geometry(small: ViewerVolume) -> dict[str, Any]:
    """What the page needs to name voxels as the file does: world (RAS mm) -> voxel index of the
    viewer's copy, and the world position of the strongest voxel, where the viewer opens."""
    magnitude = np.abs(np.nan_to_num(small.array))
    peak = np.unravel_index(int(np.argmax(magnitude)), magnitude.shape) if magnitude.size else (0,)
    peak_mm = small.affine @ np.array([*peak[:3], *([0] * (3 - len(peak[:3]))), 1.0])
    return {
        "world_to_voxel": np.linalg.inv(small.affine).round(10).tolist(),
        "peak_mm": [round(float(v), 4) for v in peak_mm[:3]],
    }


def _source_volume(
    build: _Build, case_id: str, entry: MapEntry, grid: tuple[Any, ...]
) -> dict[str, Any] | None:
    shape, affine, stride = grid
    relative = f"data/cases/{case_id}/source.js"
    source = Path(entry.row.get("source") or "")
    if not entry.row.get("source"):
        build.data.notes.append(
            f"case {case_id}: the manifest names no source; the map is shown alone."
        )
        return None
    if source.is_file():
        info = _reuse(build, relative, _signature(source, stride, repr(affine.tolist())))
        if info is not None:
            return info
    try:
        array = read_source(case_id, source, build.data.run_dir / "config.json", tuple(shape))
    except XaimedError as exc:
        build.data.notes.append(f"{exc} The map is shown alone.")
        return None
    except (OSError, ValueError, EOFError, ImageFileError):
        build.data.notes.append(
            f"case {case_id}: source {source} is not a readable image; the map is shown alone."
        )
        return None
    # The source is shown with the map's affine: the map is written on the source's grid, so
    # this is the source's own geometry, and the two stay aligned voxel for voxel.
    small = subsample(array, affine, stride)
    payload, step = nifti_bytes(small)
    build.add_bytes(write_volume_script(build.out / relative, relative, payload))
    info = {"file": relative, "stride": stride, "shape": list(shape), "step": step}
    if source.is_file():
        signature = _signature(source, stride, repr(affine.tolist()))
        build.new_cache[relative] = {"signature": signature, "info": info}
    return info


def _write_script(path: Path, call: str, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(value), separators=(",", ":"), allow_nan=False)
    # "</" inside a string would end an inline script; these are files, but keep them safe to
    # inline too.
    text = text.replace("</", "<\\/")
    path.write_text(f"XAIMED_REPORT.{call}({text});\n", encoding="utf-8")


def _finite(value: Any) -> Any:
    # Sidecars and metrics may hold NaN or infinity (Python's json reads them); JSON, and so
    # the page's data, cannot: they become null, shown as "n/a".
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _swap(staging: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)
