"""The run configuration: ``schema`` (the pydantic models), ``loading`` (YAML to a validated
Config), ``problems`` (validation errors as sentences with key paths)."""

from xaimed.config.schema import *  # noqa: F403
from xaimed.config.schema import (  # noqa: F401
    _suggest,
    format_loc,
    load_config,
    parse_bytes,
    parse_config,
)
