"""Guards on what a run reads and where it writes: file kinds, ids, names, declared sizes.

Each function here enforces one guarantee of the README's "Safety" section and is called from
one place: discovery (file kinds, output folder left out, unique ids), the readers (declared
sizes, file kinds of case-list entries), the writers (names of any bytes made printable).
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from xaimed.errors import InputError, XaimedError

if TYPE_CHECKING:
    from xaimed.io.case import Case

# Bytes per voxel of the float32 array a reader makes, whatever the file's own type.
FLOAT32_BYTES = 4


def escape_text(text: str) -> str:
    """``text`` with the undecodable bytes of a file name (surrogate escapes) as ``\\xNN``.

    Python decodes file names that are not UTF-8 with lone surrogates; those cannot be written
    to a UTF-8 manifest, sidecar or log. The escaped form is printable and names the bytes.
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_output_folder(out_dir: Path, input_path: Path) -> None:
    """Refuse an output folder that is empty or ``.``, the input itself or a folder above it.

    ``-o ""`` is ``.`` once it is a Path: both would scatter a run's files over the current
    folder. An output folder that holds the input would be left out of discovery with it.
    """
    if str(out_dir) in ("", "."):
        raise XaimedError(
            "--out: an empty or '.' output folder would write the run's files into the current "
            "folder; give a folder of its own (e.g. --out runs/first)."
        )
    out, source = out_dir.resolve(), input_path.resolve()
    if source == out or out in source.parents:
        raise XaimedError(
            f"--out {out_dir}: the output folder holds the input {input_path}; choose an output "
            "folder outside the input."
        )


def is_regular_file(path: Path) -> bool:
    """Whether ``path`` (after symlinks) is a regular file: not a FIFO, device or socket."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def require_readable_kind(path: Path, where: str) -> None:
    """Refuse a path that is neither a regular file nor a folder (a FIFO or device would block
    or never end when read); ``where`` names it for the message (e.g. ``case c1``)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # a missing path gets its own message where it is read
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(
            f"{where}: {escape_text(str(path))} is not a regular file or folder (a FIFO, device "
            "or socket); give the path of an image file or a folder."
        )


def regular_files(folder: Path, exclude: Path | None = None) -> list[Path]:
    """The regular files below ``folder``, sorted, leaving out the folder ``exclude`` (a run's
    output folder) and everything that is not a regular file (FIFOs, devices, sockets).

    Symlinked folders are not followed, so a link loop cannot make discovery endless.
    """
    skip = exclude.resolve() if exclude is not None else None
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        if skip is not None:
            dirs[:] = [d for d in dirs if (here / d).resolve() != skip]
        found += [here / name for name in files if is_regular_file(here / name)]
    return sorted(found)


def _suffix(text: str) -> str:
    return hashlib.sha256(os.fsencode(text)).hexdigest()[:8]


def unique_case_ids(cases: list[Case], input_path: Path) -> list[Case]:
    """``cases`` with ids that differ even on a case-insensitive file system.

    Ids that clash (``scan.nii`` and ``scan.nii.gz``, ``a b.nii.gz`` and ``a_b.nii.gz``, ``A``
    and ``a``) each get ``-`` and 8 hex digits of a hash of the case's path below the input: the
    same files give the same ids on every run, and the manifest's ``source`` column records which
    file each id is. Case-list ids are the user's own and are refused instead.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for index, case in enumerate(cases):
        groups[case.case_id.casefold()].append(index)
    clashes = [members for members in groups.values() if len(members) > 1]
    if not clashes:
        return cases
    listed = [cases[i].case_id for members in clashes for i in members if cases[i].format is None]
    if listed:
        raise InputError(
            f"case list: case ids {', '.join(sorted(listed))} differ only in upper/lower case and "
            "would share one output folder on many file systems; make them differ in more."
        )
    out = list(cases)
    taken = {case.case_id.casefold() for case in cases}
    for members in clashes:
        for index in members:
            case = cases[index]
            anchor = (
                case.study.study_uid if case.study is not None else _relative(case.path, input_path)
            )
            new_id = f"{case.case_id}-{_suffix(anchor)}"
            while new_id.casefold() in taken:  # another file already has this name: hash again
                anchor += "/"
                new_id = f"{case.case_id}-{_suffix(anchor)}"
            taken.add(new_id.casefold())
            out[index] = replace(case, case_id=new_id)
    return out


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def unique_file_parts(
    names: Iterable[str], clean: Callable[[str], str], reserved: set[str]
) -> dict[str, str]:
    """A file-name part for each of ``names`` (class names), distinct from each other and from
    ``reserved`` (``dominant``) even on a case-insensitive file system.

    ``clean`` makes a name file-name safe; names it cleans to the same part, or to a reserved
    word, get ``-`` and 8 hex digits of a hash of the name itself, stable across runs.
    """
    names = list(dict.fromkeys(names))
    parts = {name: clean(name) for name in names}
    count: dict[str, int] = defaultdict(int)
    for part in parts.values():
        count[part.casefold()] += 1
    blocked = {word.casefold() for word in reserved}
    out: dict[str, str] = {}
    taken = {p.casefold() for p in parts.values()} | blocked
    for name, part in parts.items():
        if count[part.casefold()] > 1 or part.casefold() in blocked:
            anchor = name
            new = f"{part}-{_suffix(anchor)}"
            while new.casefold() in taken:
                anchor += "\0"
                new = f"{part}-{_suffix(anchor)}"
            taken.add(new.casefold())
            part = new
        out[name] = part
    return out


def available_memory() -> int | None:
    """Bytes of host memory available now (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_declared_size(shape: Iterable[int], where: str, budget: int | None) -> None:
    """Refuse an image whose header declares more voxels than memory can hold, before reading.

    ``budget`` is ``runtime.memory_budget`` in bytes; without one, the host's available memory
    is the limit. The check is on the float32 array the reader makes; a corrupt header claiming
    4000^3 voxels is then one sentence, not an attempt to allocate 238 GiB.
    """
    dims = [int(n) for n in shape]
    voxels = 1
    for n in dims:
        voxels *= max(n, 0)
    needed = voxels * FLOAT32_BYTES
    limit = budget if budget is not None else available_memory()
    if limit is None or needed <= limit:
        return
    source = "runtime.memory_budget" if budget is not None else "the memory available now"
    raise InputError(
        f"{where}: the header declares {' x '.join(map(str, dims))} voxels, "
        f"{_size(needed)} as float32, more than {source} ({_size(limit)}); the header is corrupt "
        "or the image needs a machine with more memory (or a larger runtime.memory_budget)."
    )


def check_stacked_size(shape: tuple[int, ...], where: str, budget: int | None, held: int) -> None:
    """Refuse a multi-sequence case whose channels, stacked into one float32 array of ``shape``
    (I, J, K, C), need more memory than the budget, before the other channels are read.

    Each channel's reader checks its own file alone; this checks what the case holds once all
    are stacked. ``held`` is what the case already holds (the channel read first): without
    ``runtime.memory_budget`` the limit is the memory available now plus that.
    """
    needed = math.prod(shape) * FLOAT32_BYTES
    available = available_memory() if budget is None else None
    limit = budget if budget is not None else (None if available is None else available + held)
    if limit is None or needed <= limit:
        return
    source = "runtime.memory_budget" if budget is not None else "the memory available now"
    raise InputError(
        f"{where}: its {shape[-1]} channels stacked ({' x '.join(map(str, shape))} voxels) "
        f"need {_size(needed)} as float32, more than {source} ({_size(limit)}); give fewer "
        "channels, or a machine with more memory (or a larger runtime.memory_budget)."
    )


def _size(n: int) -> str:
    """Bytes in the largest binary unit (GiB, MiB, KiB) that leaves at least 1, one decimal."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 2**10:.1f} KiB"
