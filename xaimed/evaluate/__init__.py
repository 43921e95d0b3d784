"""Evaluation of attribution maps: one module per kind of metric, and the runner.

``localisation`` (maps against masks), ``faithfulness`` (deletion / insertion curves),
``sanity`` (model- and data-randomisation tests), ``robustness`` (max-sensitivity),
``agreement`` (between methods and between checkpoints) hold the metrics, each with a
``compute`` of the ``metric.Metric`` protocol, registered in ``settings.METRICS`` (settings
section, metrics.csv columns, module); ``similarity`` the
map comparisons they share; ``session`` the bridge to xaimed's model, preprocessing and method
registry; ``runner`` reads an explain run and writes ``metrics.csv``, the summary JSON and the
plots (``report``, ``plots``), with the interval statistics and paired tests of
``stats``; ``records`` keeps each case's results per kind so that a stopped evaluation
resumes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xaimed.evaluate.runner import EvaluationResult

__all__ = ["EvaluationResult", "evaluate"]


def evaluate(*args: Any, **kwargs: Any) -> EvaluationResult:
    """Evaluate an explain run; see :func:`xaimed.evaluate.runner.evaluate`."""
    from xaimed.evaluate.runner import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
