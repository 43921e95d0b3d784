"""The ``Metric`` protocol: what one kind of evaluation metric provides, and what it is given.

A kind is registered once, in :data:`xaimed.evaluate.settings.METRICS` (settings section,
metrics.csv columns, module). Its module provides ``compute(work, settings)``: for one case it
reads the stored maps and whatever else it needs from :class:`CaseWork` (the opened case, the
model's scorer, the mask, other models) and adds rows (and curves or cascades for the plots)
to it. The runner gives each kind a fresh :class:`CaseWork` per case, records what it added when
it returns, and drops it when a stop request interrupts it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import torch

from xaimed.casepath import OpenCase
from xaimed.config import Config, MethodEntry
from xaimed.engine.scoring import Scorer
from xaimed.errors import XaimedError
from xaimed.evaluate.folding import fold_safe
from xaimed.evaluate.passmodel import pass_model
from xaimed.evaluate.session import like, reexplain
from xaimed.evaluate.settings import METRICS
from xaimed.evaluate.similarity import Ranked, ranked
from xaimed.model import LoadedModel
from xaimed.run.signals import StopFlag


class Metric(Protocol):
    """What a metric kind's module provides (a module satisfies this protocol)."""

    def compute(self, work: CaseWork, settings: Any) -> None:
        """Compute the kind's values for ``work``'s case with its ``evaluate.<kind>`` section,
        adding them with :meth:`CaseWork.add`. A failure of one map is raised as XaimedError
        from the function given to :meth:`CaseWork.each` and recorded; the other maps go on."""


def load_metric(kind: str) -> Metric:
    """The module of a registered kind (imported now: config loading stays torch-free)."""
    return cast(Metric, importlib.import_module(METRICS[kind].module))


@dataclass
class StoredMap:
    """One stored map of the run and what it explains."""

    method: str
    entry: MethodEntry
    target: int
    target_name: str
    data: np.ndarray
    _ranked: dict[bool, Ranked] = field(default_factory=dict, repr=False)

    def ranked(self, absolute: bool) -> Ranked:
        """The map's ranks for Spearman correlations, computed once per map and mode (every
        cascade step, noise draw and method pair compares against the same stored map)."""
        if absolute not in self._ranked:
            self._ranked[absolute] = ranked(self.data, absolute=absolute)
        return self._ranked[absolute]


@dataclass
class CaseWork:
    """One case as a metric kind sees it, and what the kind adds for it."""

    kind: str
    case: OpenCase
    maps: list[StoredMap]
    config: Config
    scorer: Scorer
    loaded: LoadedModel
    stop: StopFlag
    mask: np.ndarray | None = None
    shuffled: LoadedModel | None = None
    checkpoints: list[LoadedModel] = field(default_factory=list)
    # The loaded model as evaluate runs its passes (xaimed.evaluate.passmodel: batch norms
    # folded, input convolution swapped), made once per evaluation; None for a model that
    # cannot be copied (TorchScript) or that neither rewrite applies to.
    folded: torch.nn.Module | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    curves: list[dict[str, Any]] = field(default_factory=list)
    cascades: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def case_id(self) -> str:
        """The case's id."""
        return self.case.case_id

    @property
    def seed(self) -> int:
        """The run's seed (re-explanations and random draws use it)."""
        return self.config.runtime.seed

    def forward_scorer(self) -> Scorer:
        """The scorer for forward passes only (curves): on the pass model where there is one."""
        if self.folded is None:
            return self.scorer
        return like(self.scorer, self.folded, self.config)

    def each(self, compute: Callable[[StoredMap], None], methods: list[str] | None = None) -> None:
        """``compute(m)`` for every map (of ``methods`` when given), a stop request checked
        before each; a map whose computation raises XaimedError is recorded as a failure."""
        for m in self.maps:
            if methods is not None and m.method not in methods:
                continue
            self.stop.check()
            try:
                compute(m)
            except XaimedError as exc:
                self.failures.append(f"case {self.case_id} {m.method} {self.kind}: {exc}")

    def add(self, m: StoredMap, metric: str, value: float, detail: str = "") -> None:
        """One row of metrics.csv for map ``m``."""
        self.add_row(m.method, m.target_name, metric, value, detail)

    def add_row(
        self, method: str, target: str, metric: str, value: float, detail: str = ""
    ) -> None:
        """One row of metrics.csv (``method`` may name a pair: ``a vs b``)."""
        if metric not in METRICS[self.kind].columns:
            # The table is the documentation of metrics.csv; a column outside it is a bug.
            raise ValueError(f"{self.kind} writes {metric!r}, not in its registered columns")
        self.rows.append({"case_id": self.case_id, "method": method, "target": target,
                          "metric": metric, "value": float(value), "detail": detail})  # fmt: skip

    def reexplain(
        self,
        m: StoredMap,
        *,
        network: torch.nn.Module | None = None,
        inputs: torch.Tensor | None = None,
    ) -> np.ndarray:
        """``m``'s method run again (same parameters, target, seed) with another ``network``
        (a randomised copy, a checkpoint) or on other ``inputs`` (a noisy copy).

        Where the method sees only the model's function, the network runs as
        :func:`xaimed.evaluate.passmodel.pass_model` makes it (batch norms folded, the input
        convolution's gradient as a depthwise convolution: the same map up to float rounding,
        faster)."""
        if fold_safe(m.entry, self.loaded.module if network is None else network):
            if network is None and self.folded is not None:
                network = self.folded
            elif network is not None and not self.loaded.is_script:
                network = pass_model(network)
        scorer = self.scorer if network is None else like(self.scorer, network, self.config)
        return reexplain(scorer, self.case, m.entry, m.target, self.config, inputs=inputs)
