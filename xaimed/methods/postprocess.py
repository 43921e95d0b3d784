"""Explicit post-processing of raw maps; nothing here runs unless the config asks for it."""

from __future__ import annotations

import numpy as np

from xaimed.config import PostProcess


def postprocess(data: np.ndarray, spec: PostProcess) -> np.ndarray:
    """Apply, in this order, abs, clipping at a percentile of |map|, and normalisation."""
    out = np.asarray(data, dtype=np.float32)
    if spec.abs:
        out = np.abs(out)
    if spec.clip_percentile is not None:
        limit = float(np.percentile(np.abs(out), spec.clip_percentile))
        out = np.clip(out, -limit, limit)
    if spec.normalize == "max_abs":
        peak = float(np.abs(out).max())
        out = out / peak if peak > 0 else out
    elif spec.normalize == "minmax":
        lo, hi = float(out.min()), float(out.max())
        out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
    return out.astype(np.float32)


def is_identity(spec: PostProcess) -> bool:
    """True when the map is written raw."""
    return not spec.abs and spec.clip_percentile is None and spec.normalize == "none"
