"""MONAI bundles: the bundle's own network, weights, preprocessing, inferer and inverse.

A bundle's ``configs/inference.json`` (or ``.yaml``) is read with MONAI's ``ConfigParser``;
``network_def`` builds the network, whose weights come from ``models/model.pt`` (read without
running code, see :mod:`xaimed.models.checkpoint`) or ``models/model.ts`` (TorchScript). A case
goes through the bundle's ``preprocessing`` exactly (MONAI reads the case's file with the bundle's
``LoadImaged``), the explained module is the bundle's ``inferer`` (sliding window included) around
the network, and maps go back through MONAI's own inverse of the preprocessing
(``Compose.inverse``), which undoes every invertible transform in reverse order.

A transform that moves voxels (changes the spatial shape or the affine) but has no inverse would
leave maps on the wrong grid, so such a bundle is refused, naming the transform. Intensity
transforms move nothing and need no inverse.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xaimed.config import ChannelsStep
from xaimed.errors import InputError, ModelError
from xaimed.geometry import Geometry
from xaimed.models.base import BuiltModel
from xaimed.models.checkpoint import load_checkpoint
from xaimed.preprocess import AppliedChannels, Prepared
from xaimed.volume import Volume

KEY = "model.monai_bundle"


def _config_file(folder: Path) -> Path:
    for name in ("inference.json", "inference.yaml", "inference.yml"):
        if (folder / "configs" / name).is_file():
            return folder / "configs" / name
    raise ModelError(
        f"{KEY}: {folder} has no configs/inference.json or .yaml; give the bundle's root folder."
    )


class BundleModule(torch.nn.Module):
    """The bundle's inferer around its network: what the bundle computes for an input batch."""

    def __init__(self, network: torch.nn.Module, inferer: Any) -> None:
        super().__init__()
        self.network = network
        self.inferer = inferer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inferer(x, self.network)
        return out.as_tensor() if hasattr(out, "as_tensor") else out


@dataclass(frozen=True)
class AppliedBundle:
    """The bundle's preprocessing of one case; the inverse is MONAI's ``Compose.inverse``."""

    preprocessing: Any
    key: str
    output: Any  # the preprocessed MetaTensor: its meta and applied operations
    names: list[str] = field(default_factory=list)

    def sidecar_fields(self) -> dict[str, Any]:
        return {"step": "monai_bundle", "transforms": self.names}

    def invert(self, data: np.ndarray) -> np.ndarray:
        """(C, ...) on the preprocessed grid -> (1, I, J, K) on the loaded file's grid."""
        from monai.data import MetaTensor

        tensor = MetaTensor(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)))
        tensor.copy_meta_from(self.output)
        tensor.applied_operations = copy.deepcopy(self.output.applied_operations)
        back = self.preprocessing.inverse({self.key: tensor})[self.key]
        array = back.detach().cpu().numpy() if hasattr(back, "detach") else np.asarray(back)
        # Channels of one source voxel are that voxel: their attributions add up.
        return array.sum(axis=0, keepdims=True).astype(np.float32)


@dataclass(frozen=True)
class Bundle:
    """A parsed bundle's preprocessing, ready to prepare cases."""

    folder: Path
    preprocessing: Any
    key: str

    def prepare(self, volume: Volume) -> Prepared:
        """The bundle's preprocessing of the case's file, recorded for the inverse."""
        path = volume.source.path
        if path is None or not Path(path).exists():
            raise InputError(f"{path}: the MONAI bundle reads cases from files; give a file.")
        out = _run_checked(self.preprocessing, self.key, str(path), self.folder)
        array = np.asarray(out.detach().cpu().numpy(), dtype=np.float32)
        spatial = tuple(volume.array.shape[:3])
        if array.ndim != 4:
            raise InputError(
                f"{path}: the bundle's preprocessing gives shape {array.shape}, not channels + 3D."
            )
        names = [type(t).__name__ for t in self.preprocessing.flatten().transforms]
        step = AppliedBundle(self.preprocessing, self.key, out, names)
        back = step.invert(np.zeros((1, *array.shape[1:]), dtype=np.float32))
        if tuple(back.shape[1:]) != spatial:
            raise InputError(
                f"{path}: MONAI's inverse of the bundle's preprocessing gives shape "
                f"{back.shape[1:]}, not the image's {spatial}; the bundle reads this file "
                "differently from xaimed."
            )
        affine = np.asarray(out.affine, dtype=np.float64)
        channels = AppliedChannels(ChannelsStep(source="single"), 1)
        return Prepared(volume, array, affine, [channels, step])


def _geometry(image: Any) -> Geometry:
    return Geometry.of(tuple(image.shape[-3:]), np.asarray(image.affine, dtype=np.float64))


def _same(a: Geometry, b: Geometry) -> bool:
    return a.same_grid(b)


def _undoes(transform: Any, data: dict[str, Any], key: str, before: Any) -> bool:
    """Whether the transform's own inverse restores the grid it started from (a Lambdad
    without ``inverse_func`` is "invertible" but its inverse does nothing)."""
    try:
        undone = transform.inverse(copy.deepcopy(data))[key]
    except Exception:
        return False
    return _same(_geometry(undone), _geometry(before))


def _run_checked(preprocessing: Any, key: str, path: str, folder: Path) -> Any:
    """The preprocessing run transform by transform (as Compose does), refusing one that moves
    voxels without an inverse that undoes it; returns the preprocessed image."""
    from monai.transforms import InvertibleTransform

    data: Any = {key: path}
    for transform in preprocessing.flatten().transforms:
        before = data.get(key)
        data = transform(data)
        if isinstance(before, str) or _same(_geometry(before), _geometry(data[key])):
            continue
        if not (
            isinstance(transform, InvertibleTransform) and _undoes(transform, data, key, before)
        ):
            raise ModelError(
                f"{KEY} {folder}: the preprocessing transform {type(transform).__name__} moves "
                "voxels but has no inverse that undoes it, so maps could not be sent back to the "
                "image; use an invertible transform (e.g. Spacingd, Resized, CropForegroundd)."
            )
    return data[key]


def load_bundle(folder: Path, *, allow_pickle: bool, device: torch.device) -> BuiltModel:
    """Read a MONAI bundle: network with its weights, preprocessing and inferer."""
    from monai.bundle import ConfigParser
    from monai.inferers import SimpleInferer

    config_file = _config_file(folder)
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(folder)
    try:
        preprocessing = parser.get_parsed_content("preprocessing")
        inferer = parser.get_parsed_content("inferer") if "inferer" in parser else SimpleInferer()
    except Exception as exc:
        raise ModelError(
            f"{KEY} {config_file}: preprocessing or inferer cannot be built "
            f"({type(exc).__name__}: {exc})."
        ) from None
    key = _image_key(preprocessing)
    weights = folder / "models" / "model.pt"
    script = folder / "models" / "model.ts"
    if weights.is_file():
        network = parser.get_parsed_content("network_def")
        state = load_checkpoint(weights, allow_pickle=allow_pickle, key=KEY)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict):
            raise ModelError(f"{KEY} {weights}: holds a {type(state).__name__}, not weights.")
        try:
            network.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise ModelError(f"{KEY} {weights}: does not fit network_def ({first}).") from None
        source = weights
    elif script.is_file():
        try:
            network = torch.jit.load(str(script), map_location="cpu")
        except Exception as exc:
            raise ModelError(
                f"{KEY} {script}: not a loadable TorchScript file ({type(exc).__name__})."
            ) from None
        source = script
    else:
        raise ModelError(f"{KEY} {folder}: has neither models/model.pt nor models/model.ts.")
    with source.open("rb") as fh:
        digest = hashlib.sha256(hashlib.file_digest(fh, "sha256").digest())
    digest.update(config_file.read_bytes())
    bundle = Bundle(folder, preprocessing, key)
    module = BundleModule(network, inferer)
    return BuiltModel(
        module=module,
        members=(),
        file=source,
        sha256=digest.hexdigest(),
        classes=None,
        output="logits",
        prepare=bundle.prepare,
        details={
            "kind": "monai_bundle",
            "bundle": str(folder),
            "config": config_file.name,
            "inferer": type(inferer).__name__,
        },
    )


def _image_key(preprocessing: Any) -> str:
    """The data key the bundle's preprocessing reads the image under (the first transform's)."""
    for transform in preprocessing.flatten().transforms:
        keys = getattr(transform, "keys", None)
        if keys:
            return str(keys[0])
    return "image"
