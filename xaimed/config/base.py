"""The base of every config section, shared by the schema and the evaluate settings."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(ge=1)]


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, and a validated section is never
    changed (frozen): a different setting is a new config, validated again
    (:func:`xaimed.config.loading.with_overrides`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
