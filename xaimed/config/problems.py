"""Validation errors as sentences: each names its YAML key path, says what is wrong and, for a
misspelt key or name, suggests the nearest valid one.

Pydantic reports a value that fits no member of a union once per member, and puts the member's
internal tag (``constrained-int``, ``tuple[...]``, ``function-after[...]``) into the location; a
user never typed those. Tags are dropped, and a union's errors become one line: the error of the
member the value was meant for (the one that did not fail on the value's type) where there is
one, else every member's expectation joined with "or".
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError

# Error types that only say "not this member's type": in a union they are noise when another
# member took the value and found it wrong.
_TYPE_ERRORS = ("_type", "_parsing", "literal_error", "enum", "is_instance_of", "url_parsing")
_PLAIN_TAGS = {"int", "float", "str", "bool", "none", "list", "tuple", "dict", "set", "bytes"}
# A nested problem list carried by a PydanticCustomError (method parameters, see schema).
NESTED = "nested_problems"


def suggest(word: str, candidates: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def format_loc(loc: tuple[Any, ...]) -> str:
    """``('methods', 0, 'params')`` -> ``methods[0].params``."""
    out = ""
    for key in loc:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += f".{key}" if out else str(key)
    return out or "(top level)"


def _is_tag(key: Any) -> bool:
    """A union member or validator tag pydantic put into an error location."""
    if not isinstance(key, str):
        return False
    return key in _PLAIN_TAGS or "[" in key or key.startswith(("constrained-", "function-"))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic model classes inside an annotation (through Optional, list, unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, list, tuple, Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _fields_at(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """Valid key names of the section that ``loc`` (minus its last key) points into."""
    models: list[type[BaseModel]] = [root]
    for key in loc[:-1]:
        if isinstance(key, int):
            continue
        nxt: list[type[BaseModel]] = []
        for model in models:
            for name, info in model.model_fields.items():
                if key in (name, info.alias):
                    nxt += _models_in(info.annotation)
        models = nxt or models
    return [info.alias or name for model in models for name, info in model.model_fields.items()]


def _message(err: Any) -> str:
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "missing" and isinstance(err["loc"][-1], int):
        return "too few values: give one per axis (three; two for a 2D model)"
    message = message[:1].lower() + message[1:]
    # Pydantic's parsing details ("unable to parse string as a number") say nothing new.
    message = message.split(", unable to ")[0]
    value = err.get("input")
    plain = err["type"] not in ("missing", "value_error", NESTED)
    if plain and isinstance(value, str | int | float) and "got" not in message:
        message += f", got {value!r}"
    return message


def _path(prefix: str, loc: tuple[Any, ...]) -> str:
    if not loc:
        return prefix.rstrip(".") or "(top level)"
    return prefix + format_loc(loc)


def _is_type_error(err: Any) -> bool:
    return str(err["type"]).endswith(_TYPE_ERRORS) or err["type"] in _TYPE_ERRORS


def render(error: ValidationError, root: type[BaseModel], prefix: str = "") -> list[str]:
    """Every problem of ``error`` as ``key.path: what is wrong``, in order, without repeats."""
    # Group a union's errors by where the union sits (the location up to the first tag).
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for err in error.errors():
        loc = tuple(err["loc"])
        first_tag = next((i for i, k in enumerate(loc) if _is_tag(k)), len(loc))
        groups.setdefault(loc[:first_tag], []).append(err)
    problems: list[str] = []
    for at, errs in groups.items():
        where = _path(prefix, at)
        wrong_value = [e for e in errs if not _is_type_error(e)]
        if len(errs) > 1 and not wrong_value:
            wanted = [_message(e).split(", got")[0].removeprefix("input should be ") for e in errs]
            value = errs[0].get("input")
            problems.append(
                f"{where}: input should be {', or '.join(dict.fromkeys(wanted))}, got {value!r}"
            )
            continue
        for err in wrong_value if len(errs) > 1 else errs:
            loc = tuple(k for k in err["loc"] if not _is_tag(k))
            path = _path(prefix, loc)
            if err["type"] == NESTED:
                problems += [f"{path}.{p}" for p in err["ctx"]["problems"]]
            elif err["type"] == "extra_forbidden":
                key = str(loc[-1])
                problems.append(f"{path}: unknown key {key!r}{suggest(key, _fields_at(loc, root))}")
            else:
                problems.append(f"{path}: {_message(err)}")
    return list(dict.fromkeys(problems))
