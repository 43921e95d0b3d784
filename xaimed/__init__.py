"""xaimed: explain what 3D medical-imaging models look at.

The public API is small: :func:`load_config` reads and validates a YAML config, :func:`explain`
runs every configured method on every case of an input and writes maps, sidecars, pictures and a
manifest. The ``xaimed`` command is a thin layer over these two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "explain", "load_config"]

if TYPE_CHECKING:
    from xaimed.config import load_config
    from xaimed.pipeline import explain


def __getattr__(name: str) -> Any:
    # Lazy so that `import xaimed` (and `xaimed --help`) does not pay for importing torch.
    if name == "load_config":
        from xaimed.config import load_config

        return load_config
    if name == "explain":
        from xaimed.pipeline import explain

        return explain
    raise AttributeError(name)
