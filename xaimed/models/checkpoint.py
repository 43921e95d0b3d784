"""Read training checkpoints without running code from them.

``torch.load(weights_only=True)`` unpickles only tensors, containers and plain values. Training
frameworks also store numpy scalars and dtypes (nnU-Net's ``logging`` and ``_best_ema``); those
few numpy types are allow-listed here, because rebuilding a numpy scalar runs no user code. Any
other global in the pickle stops the load, and the file is refused unless the config sets
``model.allow_pickle``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xaimed.errors import ModelError


def _numpy_globals() -> list[Any]:
    """The numpy types a checkpoint may name: scalars, dtypes and the dtype classes."""
    allowed: list[Any] = [np.dtype, np.ndarray]
    # numpy >= 2 pickles scalars as numpy._core.multiarray.scalar, numpy < 2 as
    # numpy.core.multiarray.scalar; both names mean the same function.
    scalar = np._core.multiarray.scalar  # type: ignore[attr-defined]
    allowed += [(scalar, "numpy._core.multiarray.scalar"), (scalar, "numpy.core.multiarray.scalar")]
    reconstruct = np._core.multiarray._reconstruct  # type: ignore[attr-defined]
    allowed += [
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        (reconstruct, "numpy.core.multiarray._reconstruct"),
    ]
    allowed += [
        getattr(np.dtypes, name)
        for name in dir(np.dtypes)
        if name.endswith("DType") and isinstance(getattr(np.dtypes, name), type)
    ]
    return allowed


def load_checkpoint(path: Path, *, allow_pickle: bool, key: str) -> Any:
    """The object pickled in ``path``, read without running code unless ``allow_pickle``.

    ``key`` is the config key that named the file, for the messages.
    """
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not allow_pickle:
            raise ModelError(
                f"{key} {path}: the file holds pickled objects (a whole model, or other Python "
                "objects) that could run code when loaded, so it was not loaded; save only its "
                "tensors (model.state_dict()), or set model.allow_pickle: true if you trust the "
                "file."
            ) from None
    except Exception as exc:
        raise ModelError(
            f"{key} {path}: cannot be read by torch.load ({type(exc).__name__}: {exc})."
        ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelError(f"{key} {path}: cannot be unpickled ({exc}).") from None
