"""What a NRRD or MetaImage header says, read before SimpleITK opens it: its fields, the data
files it names, and the rule that those lie in the header's own folder.

A header may keep its voxels in other files (``data file:`` in NRRD, ``ElementDataFile`` in
MetaImage; ITK follows either in any of the four suffixes, attached ``.nrrd``/``.mha`` too):
one name, ``LIST`` (names on the following lines), a printf pattern with a range
(``slice%03d.raw 1 40 1``) or, in MetaImage, ``LOCAL``. ITK opens whatever is named, absolute
paths and ``..`` included, so a header from someone else's folder could make a run read any
file as voxels and write it out as maps. Neither SimpleITK nor any library we use exposes the
names ITK will open, so they are read here, by hand and conservatively: every way a value could
be read (the whole value, each word, each listed line) is checked, a superset of what ITK opens.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from xaimed.errors import InputError
from xaimed.io.safety import escape_text

# Fields are looked for in the first 64 KiB (the voxels of .nrrd/.mha follow the header).
_HEAD_BYTES = 65536
# Data file fields are looked for in the whole header, as ITK reads it, and a LIST header names
# its files on the lines after the field, to the end of the file: a header longer than this is
# refused rather than checked in part.
_LIST_BYTES = 16 * 2**20
_DATA_KEYS = ("datafile", "elementdatafile")
# One printf conversion of an integer, as a NRRD or MetaImage data file pattern uses; any
# other conversion would hand ITK's sprintf an int where it expects something else.
_CONVERSION = re.compile(r"%(%|[-+ 0#]*\d{0,3}[diouxX])")


def suffix_of(path: Path) -> str:
    """The file's suffix in lower case (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``)."""
    return path.suffix.lower()


def _is_metaimage(path: Path) -> bool:
    return suffix_of(path) in (".mha", ".mhd")


def _read(path: Path, limit: int) -> str:
    """The file's first ``limit`` bytes as text, one character per byte (Latin-1 maps every
    byte to itself, so a name's bytes can be recovered exactly)."""
    try:
        with path.open("rb") as fh:
            return fh.read(limit).decode("latin-1")
    except OSError:
        return ""


def _fields(path: Path, limit: int = _HEAD_BYTES) -> tuple[list[tuple[int, str, str]], bool]:
    """The header's ``(line number, key, value)`` triples in order (keys in lower case, without
    spaces) among the file's first ``limit`` bytes, and whether the header ended there: NRRD's
    ``key: value`` up to its blank line, MetaImage's ``Key = Value`` (MetaIO takes ``:`` too and
    skips blank lines) up to ``ElementDataFile``."""
    metaimage = _is_metaimage(path)
    found = []
    for number, line in enumerate(_read(path, limit).split("\n")):
        if not line.strip():
            if metaimage:
                continue
            return found, True  # NRRD: the blank line ends the header
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if not metaimage:
            cut = line.find(":")
        if cut < 0:
            continue
        key = line[:cut].strip().lower().replace(" ", "")
        found.append((number, key, line[cut + 1 :]))  # as written: see _readings
        if metaimage and key == "elementdatafile":
            return found, True  # MetaImage: the last field
    return found, False


def header_fields(path: Path) -> dict[str, str]:
    """The header's fields, keys in lower case (the first of a repeated key)."""
    fields: dict[str, str] = {}
    for _, key, value in _fields(path)[0]:
        fields.setdefault(key, value.lstrip("=").strip())
    return fields


def detached_data_file(path: Path, fields: dict[str, str] | None = None) -> Path | None:
    """The one separate file holding the voxels that a detached header (``.nhdr``, ``.mhd``)
    names, or None (voxels in the header file, or ``LIST``/a pattern: several files).

    Read here, not by SimpleITK, only to name the file in messages: ITK's own error text is its
    internals, and a missing NRRD data file already fails reading the header. ``fields`` are
    the header's (:func:`header_fields`), when the caller has read them already.
    """
    if suffix_of(path) not in (".nhdr", ".mhd"):
        return None
    fields = header_fields(path) if fields is None else fields
    name = fields.get("datafile") or fields.get("elementdatafile", "")
    if not name or name.split()[0].upper() in ("LOCAL", "LIST") or "%" in name:
        return None
    return path.parent / _file_name(name)


def _file_name(text: str) -> str:
    """A name as the header's bytes spell it on this file system (C stops at a NUL byte)."""
    return os.fsdecode(text.split("\0")[0].encode("latin-1"))


def _readings(value: str) -> set[str]:
    """Every name ITK could take from one value as written: the whole of it, with or without
    the spaces (and a NRRD key/value pair's ``=``) around it, and each of its words."""
    names = {value, value.lstrip(), value.strip(), value.lstrip("=").strip(), *value.split()}
    return {name for name in map(_file_name, names) if name}


def _named(path: Path) -> set[str]:
    """Every name the header's data file fields could make ITK open (a superset)."""
    names: set[str] = set()
    fields, ended = _fields(path)
    if not ended and path.stat().st_size > _HEAD_BYTES:  # a long header: read it all
        fields, ended = _fields(path, _LIST_BYTES)
        if not ended and path.stat().st_size > _LIST_BYTES:
            raise _TooLong
    for number, key, value in fields:
        if key not in _DATA_KEYS:
            continue
        names |= _readings(value)
        if value.strip().upper().startswith("LIST"):
            if path.stat().st_size > _LIST_BYTES:
                raise _TooLong
            lines = _read(path, _LIST_BYTES).split("\n")
            for line in lines[number + 1 :]:
                names |= _readings(line)
    return names


class _TooLong(Exception):
    pass


def _outside(target: Path, folder: Path) -> bool:
    try:
        return not target.resolve().is_relative_to(folder)
    except (OSError, RuntimeError):
        return False  # a symlink loop: ITK cannot open it either


def _pattern_matches(parent: Path, name: str, folder: Path) -> list[Path] | None:
    """The existing files that the printf pattern ``name`` could expand to (each is checked, so
    the range ITK would use need not be worked out), or None for a pattern that is not one
    integer conversion in the file name."""
    head, tail = os.path.split(name)
    conversions = [m.group(1) for m in _CONVERSION.finditer(tail) if m.group(1) != "%"]
    if "%" in head or len(conversions) != 1 or "%" in _CONVERSION.sub("", tail):
        return None
    pieces = _CONVERSION.split(tail)
    # re.split keeps the group: literal, conversion, literal, ...
    regex = "".join(
        re.escape(piece) if i % 2 == 0 else ("%" if piece == "%" else "[-+ 0-9a-fA-FxX]+")
        for i, piece in enumerate(pieces)
    )
    directory = parent / head
    if _outside(directory, folder) or not directory.is_dir():
        return [directory]
    return [directory / entry for entry in os.listdir(directory) if re.fullmatch(regex, entry)]


def check_data_files(path: Path, where: str) -> None:
    """Refuse a header that names a data file outside its own folder (subfolders allowed),
    after symlinks, before ITK opens anything; ``where`` names the case and header."""
    folder = path.parent.resolve()
    try:
        names = _named(path)
    except _TooLong:
        raise InputError(
            f"{where}: the header (with its LIST of data files) is longer than "
            f"{_LIST_BYTES // 2**20} MiB, more than xaimed checks; combine the data into one "
            "file next to the header."
        ) from None
    for name in sorted(names):
        shown = escape_text(name.strip())
        targets = [path.parent / name]  # a name with % may be a file's own name, too
        if "%" in name:
            matches = _pattern_matches(path.parent, name, folder)
            if matches is None:
                raise InputError(
                    f"{where}: the header's data file pattern {shown!r} is not a "
                    "file name with one integer conversion (like slice%03d.raw); fix the "
                    "header's data file field."
                )
            targets += matches
        for target in targets:
            if _outside(target, folder):
                raise InputError(
                    f"{where}: the header names the data file {shown}, which lies "
                    f"outside the header's folder {escape_text(str(folder))} (xaimed reads "
                    "voxel data only from there and its subfolders); move the data file next "
                    "to the header and name it relative to the header."
                )
