"""Read a server's credentials from the environment or a credentials file, at run start."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from xaimed.errors import ConfigError
from xaimed.pacs.settings import CredentialSettings


@dataclass(frozen=True)
class Credentials:
    """What authenticates us to a server; ``repr`` never shows the secrets."""

    auth: str = "none"
    username: str | None = None
    password: str | None = None
    token: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(auth={self.auth!r})"


def read_credentials(settings: CredentialSettings, key: str) -> Credentials:
    """The credentials ``settings`` point at; ``key`` is the config key, for messages."""
    if settings.auth == "none":
        return Credentials()
    values = _from_file(settings.file, key) if settings.file else _from_env(settings.env_prefix)
    wanted = ("username", "password") if settings.auth == "basic" else ("token",)
    missing = [name for name in wanted if not values.get(name)]
    if missing:
        where = (
            f"the credentials file {settings.file}"
            if settings.file
            else "the environment variables "
            + ", ".join(f"{settings.env_prefix}_{name.upper()}" for name in missing)
        )
        raise ConfigError(
            f"{key}: {settings.auth} authentication needs {', '.join(missing)}, not found in "
            f"{where}; set them there (credentials are never read from the config itself)."
        )
    return Credentials(settings.auth, *(values.get(k) for k in ("username", "password", "token")))


def _from_env(prefix: str) -> dict[str, str | None]:
    return {name: os.environ.get(f"{prefix}_{name.upper()}")
            for name in ("username", "password", "token")}  # fmt: skip


def _from_file(path: Path, key: str) -> dict[str, str | None]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not valid YAML or JSON"
        raise ConfigError(
            f"{key}.file: the credentials file {path} cannot be read ({reason}); give a YAML or "
            "JSON file with username and password, or token."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{key}.file: {path} must hold a mapping with username and password, or token."
        )
    return {k: (str(v) if v is not None else None) for k, v in data.items()
            if k in ("username", "password", "token")}  # fmt: skip
