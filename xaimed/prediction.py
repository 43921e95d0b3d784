"""The prediction of a case and its targets: which outputs of the model a map explains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from xaimed.errors import InputError


@dataclass(frozen=True)
class Prediction:
    """The model's outputs for one case: raw outputs, probabilities and the predicted class."""

    outputs: list[float]
    probabilities: list[float]
    predicted: int
    classes: list[str] | None

    def name_of(self, index: int) -> str:
        """Class name, or the index as text when the config names no classes."""
        if self.classes and index < len(self.classes):
            return self.classes[index]
        return str(index)

    def as_dict(self, output_kind: str) -> dict[str, Any]:
        """For sidecars."""
        return {
            output_kind: self.outputs,
            "probabilities": self.probabilities,
            "predicted_index": self.predicted,
            "predicted_class": self.name_of(self.predicted),
        }


@dataclass(frozen=True)
class Target:
    """One explained output: a class index and its name."""

    index: int
    name: str


def predict(outputs: torch.Tensor, *, output_kind: str, classes: list[str] | None) -> Prediction:
    """Turn the model's (1, n_classes) output into a Prediction."""
    flat = outputs.detach().float().reshape(outputs.shape[0], -1)[0].cpu()
    if output_kind == "probabilities":
        probs = flat
    elif flat.numel() == 1:
        probs = torch.sigmoid(flat)  # one logit: a binary classifier
    else:
        probs = torch.softmax(flat, dim=0)
    predicted = int(flat.argmax()) if flat.numel() > 1 else int(probs[0] > 0.5)
    if classes is not None and len(classes) != flat.numel():
        raise InputError(
            f"the model gives {flat.numel()} outputs but model.classes names {len(classes)}; "
            "fix model.classes."
        )
    return Prediction(flat.tolist(), probs.tolist(), predicted, classes)


def resolve_targets(spec: int | str, prediction: Prediction) -> list[Target]:
    """The targets for ``target.class`` given this case's prediction."""
    n = len(prediction.outputs)
    if spec == "predicted":
        index = prediction.predicted if n > 1 else 0
        return [Target(index, prediction.name_of(prediction.predicted))]
    if spec == "all":
        return [Target(i, prediction.name_of(i)) for i in range(n)]
    if isinstance(spec, int):
        if not 0 <= spec < n:
            raise InputError(f"target.class {spec} is out of range: the model has {n} outputs.")
        return [Target(spec, prediction.name_of(spec))]
    if prediction.classes is None:  # validated against model.classes with the config
        raise RuntimeError(f"target.class {spec!r} names a class but the model has no names")
    return [Target(prediction.classes.index(spec), spec)]
