"""The commented config template written by ``xaimed init``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_model_path() -> Path:
    """The TorchScript file of the bundled sample model (installed with the package)."""
    return Path(str(resources.files("xaimed.sample").joinpath("sample_cnn.ts")))


def render_template() -> str:
    """The template text, pointing at the bundled sample model so that it validates as is."""
    text = resources.files("xaimed.templates").joinpath("config.yaml").read_text("utf-8")
    return text.replace("{sample_model}", str(sample_model_path()))
