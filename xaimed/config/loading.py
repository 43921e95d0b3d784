"""From a YAML file (or a mapping) to a validated, frozen :class:`~xaimed.config.schema.Config`.

YAML is read with a safe loader (tags never build objects) under limits: the file's size, and
the number of values once aliases are expanded, since a few nested aliases expand to billions of
values (a "billion laughs" file) that validation would then walk. Relative paths resolve against
the config file's folder during validation. Command-line overrides (``--method``, ``--device``)
never change a config: :func:`with_overrides` validates a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from xaimed.config.problems import render, suggest
from xaimed.config.schema import Config, MethodEntry
from xaimed.errors import ConfigError

# A config is a few kilobytes; 1 MiB leaves room for long class lists and case-list-like method
# tables while refusing what no config needs.
MAX_CONFIG_BYTES = 1 << 20
# Anchors and aliases have uses (one baseline shared by methods), but a few nested aliases
# expand to billions of values (a "billion laughs" file) that validation would walk: the
# document, aliases expanded, may hold at most this many values, far above any real config.
MAX_VALUES = 100_000


class _TooLarge(Exception):
    def __init__(self, mark: Any) -> None:
        super().__init__()
        self.mark = mark


def _expanded_size(node: yaml.Node) -> int:
    """Number of values in ``node`` with every alias expanded, without expanding anything.

    Raises _TooLarge past MAX_VALUES, or for a node that contains itself.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(n: yaml.Node) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        if id(n) in open_nodes:
            raise _TooLarge(n.start_mark)
        open_nodes.add(id(n))
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(child) for child in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        if total > MAX_VALUES:
            raise _TooLarge(n.start_mark)
        open_nodes.discard(id(n))
        sizes[id(n)] = total
        return total

    return size(node)


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ConfigError(f"{path}: the config is not a regular file; give a YAML file.")
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: the config is {size} bytes, more than the {MAX_CONFIG_BYTES} a config "
                "may have; is it the right file?"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror}).") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: the config is not UTF-8 text (byte {exc.start + 1}, line {line}); save it "
            "as UTF-8."
        ) from None


def _parse_yaml(path: Path, text: str) -> Any:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except _TooLarge as exc:
        raise ConfigError(
            f"{path}: the YAML expands to more than {MAX_VALUES} values through its aliases "
            f"(from line {exc.mark.line + 1}); a config needs far fewer, so it is refused."
        ) from None
    except RecursionError:
        raise ConfigError(f"{path}: the YAML is nested too deeply to be a config.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}."
        ) from None
    finally:
        loader.dispose()


def parse_config(data: Any, base_dir: Path, *, check_files: bool = True) -> Config:
    """Validate a config mapping; relative paths resolve against ``base_dir``.

    With ``check_files`` the environment is checked too: the model files exist and
    ``model.architecture`` is an ``nn.Module`` class (which imports torch and that module).
    Raises ConfigError listing every problem, each prefixed with its key path.
    """
    if not isinstance(data, dict):
        raise ConfigError("the config must be a YAML mapping with the sections model, methods, …")
    context = {"base_dir": base_dir, "check_files": check_files}
    try:
        return Config.model_validate(data, context=context)
    except ValidationError as exc:
        problems = render(exc, Config)
        raise ConfigError(f"invalid config: {len(problems)} problem(s)", problems) from None


def load_config(path: str | Path, *, check_files: bool = True) -> Config:
    """Read and validate a YAML config file.

    Raises ConfigError (with ``problems``, each naming its YAML key path) when the file cannot be
    read or parsed, or any value is invalid.
    """
    path = Path(path)
    data = _parse_yaml(path, _read_text(path))
    try:
        return parse_config(data, path.resolve().parent, check_files=check_files)
    except ConfigError as exc:
        problems = [f"{path.name}: {p}" for p in exc.problems]
        raise ConfigError(f"{path}: {len(problems)} problem(s) in the config", problems) from None


def _merged(data: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def updated(config: Config, changes: Mapping[str, Any]) -> Config:
    """A new validated config with ``changes`` (nested like the YAML, e.g.
    ``{"runtime": {"device": "cpu"}}``) merged in; ``config`` itself is not changed.

    Raises ConfigError listing every problem of the result.
    """
    data = _merged(config.model_dump(mode="python", by_alias=True), changes)
    try:
        return Config.model_validate(data, context={"base_dir": config.base_dir})
    except ValidationError as exc:
        problems = render(exc, Config)
        raise ConfigError(f"invalid config: {len(problems)} problem(s)", problems) from None


def with_overrides(
    config: Config, *, methods: list[str] | None = None, device: str | None = None
) -> Config:
    """A new validated config: ``methods`` (names, at default parameters) replace the config's
    methods, ``device`` its ``runtime.device``. ``config`` itself is not changed.

    Raises ConfigError naming the command-line option when an override is invalid.
    """
    from xaimed.methods import registry

    if not methods and device is None:
        return config
    changes: dict[str, Any] = {}
    if methods:
        unknown = [name for name in methods if registry.find(name) is None]
        if unknown:
            name = unknown[0]
            raise ConfigError(
                f"--method {name!r}: unknown method{suggest(name, registry.names())} "
                "(`xaimed methods` lists them)."
            )
        changes["methods"] = [MethodEntry(name=name) for name in dict.fromkeys(methods)]
    if device is not None:
        changes["runtime"] = {"device": device}
    try:
        return updated(config, changes)
    except ConfigError as exc:
        # Only the overrides can be wrong: the config itself was valid.
        problems = [p.replace("runtime.device:", "--device:", 1) for p in exc.problems]
        summary = problems[0] if len(problems) == 1 else "invalid overrides"
        raise ConfigError(summary, problems) from None
