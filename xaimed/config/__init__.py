"""The run configuration: ``schema`` (the pydantic models), ``loading`` (YAML to a validated,
frozen Config; command-line overrides), ``problems`` (validation errors as sentences with key
paths), ``paths`` (relative paths against the config file's folder).

The names below are importable from ``xaimed.config`` directly; they are looked up on first use
so that importing one submodule (``xaimed.config.base`` from the evaluate settings) does not
import the whole schema.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "load_config": "loading",
    "parse_config": "loading",
    "with_overrides": "loading",
    "updated": "loading",
    "MAX_CONFIG_BYTES": "loading",
    "format_loc": "problems",
    "suggest": "problems",
    "EvaluateSection": "schema",
}


def __getattr__(name: str) -> Any:
    module = importlib.import_module(f"xaimed.config.{_HOME.get(name, 'schema')}")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'xaimed.config' has no attribute {name!r}") from None
