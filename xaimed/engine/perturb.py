"""Evaluate many perturbed copies of one input in batches, within memory, with progress.

Perturbation methods describe each perturbed input implicitly (a window, a set of removed
feature groups); the caller's ``build(start, stop)`` makes only the copies of one batch, on the
input's device, so the whole perturbation set never exists in memory at once. The batch size
comes from the memory budget (``choose_batch_size``); on an out-of-memory error the batch is
halved and the same batch retried, so a run only fails when a single sample does not fit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from xaimed.engine.counting import widen
from xaimed.errors import OutOfMemoryError

if TYPE_CHECKING:
    from xaimed.engine.patchwise import PatchwiseScores
    from xaimed.engine.slicewise import SliceScores

log = logging.getLogger("xaimed")

Build = Callable[[int, int], torch.Tensor]
Progress = Callable[[str], None]

_TOO_BIG = (
    "one input does not fit in memory on this device ({exc}); use a smaller input (resample, "
    "crop_pad or tiling) or runtime.device: cpu."
)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA / MPS / CPU allocator failures, which a smaller batch may avoid."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "failed to allocate" in text or "can't allocate" in text
    )


@dataclass
class ProgressMeter:
    """Perturbations done / total with an ETA, reported at most every ``every_s`` seconds."""

    label: str
    total: int
    report: Progress | None = None
    every_s: float = 2.0
    done: int = 0
    t0: float = field(default_factory=time.monotonic)
    last: float = 0.0

    def advance(self, n: int) -> None:
        """Count ``n`` more perturbations and report when due (always at the end)."""
        self.done += n
        now = time.monotonic()
        if now - self.last < self.every_s and self.done < self.total:
            return
        self.last = now
        elapsed = now - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        message = f"{self.label}: {self.done}/{self.total} perturbations, ETA {eta:.0f} s"
        if self.report is not None:
            self.report(message)
        else:
            log.debug(message)


@dataclass
class Evaluator:
    """Runs batches of perturbed inputs through ``model`` and keeps the target's scores.

    ``model`` returns (N, n_outputs); ``target`` picks the explained column. ``batch_size`` is
    where evaluation starts; it only ever shrinks (after out-of-memory errors), and
    ``backoffs`` counts how often it did, for the sidecar.
    """

    model: torch.nn.Module
    target: int
    batch_size: int
    progress: Progress | None = None
    backoffs: int = 0
    samples: int = 0
    # With the unperturbed ``inputs`` and ``patchwise``, a tiled segmentation model recomputes
    # only the patches each perturbed input changes (:mod:`xaimed.engine.patchwise`), and a
    # slice-wise model only the slices (:mod:`xaimed.engine.slicewise`).
    inputs: torch.Tensor | None = None
    patchwise: bool = False
    _patches: PatchwiseScores | SliceScores | None = None
    _tried: bool = False

    def _engine(self) -> PatchwiseScores | SliceScores | None:
        if not self._tried and self.patchwise and self.inputs is not None:
            from xaimed.engine.patchwise import partial_scores

            self._tried = True
            self._patches = partial_scores(self.model, self.inputs, self.batch_size)
        return self._patches

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        engine = self._engine()
        if engine is not None:
            out = engine.rows(batch)
        else:
            with torch.no_grad():
                out = self.model(batch)
        return widen(out.reshape(out.shape[0], -1)[:, self.target])

    def engine_fields(self) -> dict[str, Any]:
        """For the sidecar: how the scores were computed."""
        if self._patches is None:
            return {}
        name = self._patches.name
        return {"engine": name, name: self._patches.sidecar_fields()}

    def score(self, batch: torch.Tensor) -> torch.Tensor:
        """Scores of the target for a few inputs (the unperturbed input, the baseline), (N,)."""
        try:
            return self._forward(batch)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise OutOfMemoryError(_TOO_BIG.format(exc=exc)) from None
            raise

    def scores(self, total: int, build: Build, *, label: str = "perturbations") -> torch.Tensor:
        """Target scores of the ``total`` perturbed inputs that ``build(start, stop)`` makes."""

        def counted(n: int) -> None:
            self.samples += n

        return run_batches(
            self,
            total,
            lambda start, stop: self._forward(build(start, stop)),
            ProgressMeter(label, total, self.progress),
            too_big=_TOO_BIG,
            after=counted,
        )


class Batched(Protocol):
    """What :func:`run_batches` adjusts: the batch size, and how often it was halved."""

    batch_size: int
    backoffs: int


def run_batches(
    owner: Batched,
    total: int,
    step: Callable[[int, int], torch.Tensor],
    meter: ProgressMeter,
    *,
    too_big: str,
    unit: str = "",
    after: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Concatenated ``step(start, stop)`` over ``range(total)`` in batches of ``owner.batch_size``.

    On an out-of-memory error the batch size is halved (``owner.backoffs`` counts it) and the
    same batch retried; at a batch of one it raises OutOfMemoryError with ``too_big`` (its
    ``{exc}`` filled in). ``after(n)`` runs after each batch of ``n`` items.
    """
    out: list[torch.Tensor] = []
    start = 0
    while start < total:
        stop = min(total, start + owner.batch_size)
        try:
            out.append(step(start, stop))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if owner.batch_size == 1:
                raise OutOfMemoryError(too_big.format(exc=exc)) from None
            # Free what the failed batch left in the CUDA cache before retrying smaller.
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            owner.batch_size = max(1, owner.batch_size // 2)
            owner.backoffs += 1
            log.info("out of memory: retrying with batches of %d%s", owner.batch_size, unit)
            continue
        if after is not None:
            after(stop - start)
        meter.advance(stop - start)
        start = stop
    return torch.cat(out) if out else torch.empty(0)
