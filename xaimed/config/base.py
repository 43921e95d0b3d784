"""The base of every config section, shared by the schema and the evaluate settings."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(ge=1)]


def _compiles(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


# A regular expression, checked to compile when the config is validated.
Regex = Annotated[str, AfterValidator(_compiles)]


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, and a validated section is never
    changed (frozen): a different setting is a new config, validated again
    (:func:`xaimed.config.loading.with_overrides`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
