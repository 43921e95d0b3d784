"""nnU-Net v2 results folders: nnU-Net's own plans, network, preprocessing and export geometry.

Everything nnU-Net owns is done by nnunetv2 (``pip install xaimed[nnunet]``): reading the plans
and dataset.json, building each fold's network from the plans through its trainer class, the
preprocessing of a case (transpose, crop to non-zero, normalisation with the dataset's
fingerprint, resampling to the configuration's spacing: ``DefaultPreprocessor.run_case_npy``),
and the way back to the source grid (the resampling nnU-Net applies to logits, the bounding box
of the crop, the inverse transpose), which maps follow exactly as nnU-Net's logits do. Voxels
outside the non-zero crop never reach the network, so their attribution is exactly 0. The
sliding window is :class:`~xaimed.models.nnunet_window.NnunetWindow`; several folds are an
:class:`~xaimed.models.ensemble.EnsembleModule` (the mean of their logits, as nnU-Net's predictor
averages folds).

Checkpoints are read by :func:`~xaimed.models.checkpoint.load_checkpoint`: tensors and numpy
scalars only, no code run, unless ``model.allow_pickle``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xaimed.config import ChannelsStep
from xaimed.errors import InputError, ModelError
from xaimed.models.base import BuiltModel
from xaimed.models.checkpoint import load_checkpoint
from xaimed.models.ensemble import EnsembleModule
from xaimed.models.labels import nnunet_labels
from xaimed.models.nnunet_window import NnunetWindow
from xaimed.models.schema import NnunetSection
from xaimed.preprocess import AppliedChannels, Prepared
from xaimed.volume import Volume

# Readers whose arrays are the file's voxel grid with the axes reversed (SimpleITK's order), the
# order nnU-Net was trained in; a Volume's array is the file's grid, so reversing its axes gives
# nnU-Net the array its own reader would. A reader that reorients first cannot be matched.
SAME_GRID_READERS = {"SimpleITKIO", "NibabelIO", "SimpleITKIOWithReorient"}


def _import_nnunet() -> None:
    try:
        import nnunetv2  # noqa: F401
    except ImportError:
        raise ModelError(
            "model.nnunet: nnunetv2 is not installed; install it with scripts/install_nnunet.sh "
            "(or pip install 'xaimed[nnunet]' plus nnunetv2 as the README says)."
        ) from None


@dataclass(frozen=True)
class AppliedNnunet:
    """nnU-Net's preprocessing of one case; the inverse is nnU-Net's export geometry."""

    plans_manager: Any
    configuration_manager: Any
    properties: dict[str, Any]
    preprocessed_shape: tuple[int, ...]
    details: dict[str, Any] = field(default_factory=dict)

    def sidecar_fields(self) -> dict[str, Any]:
        props = self.properties
        return {
            "step": "nnunet",
            "transpose_forward": list(self.plans_manager.transpose_forward),
            "bbox_used_for_cropping": [list(map(int, b)) for b in props["bbox_used_for_cropping"]],
            "shape_before_cropping": list(map(int, props["shape_before_cropping"])),
            "shape_after_cropping": list(
                map(int, props["shape_after_cropping_and_before_resampling"])
            ),
            "to_shape": list(self.preprocessed_shape),
            "spacing_from": [float(s) for s in props["spacing"]],
            "spacing_to": [float(s) for s in self.configuration_manager.spacing],
            **self.details,
        }

    def invert(self, data: np.ndarray) -> np.ndarray:
        """(C, X, Y, Z) on the preprocessed grid -> (C, I, J, K) on the source's grid."""
        from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

        props, plans = self.properties, self.plans_manager
        spacing_t = [props["spacing"][i] for i in plans.transpose_forward]
        resampled = self.configuration_manager.resampling_fn_probabilities(
            np.asarray(data, dtype=np.float32),
            props["shape_after_cropping_and_before_resampling"],
            self.configuration_manager.spacing,
            spacing_t,
        )
        resampled = np.asarray(resampled, dtype=np.float32)
        full = np.zeros((data.shape[0], *props["shape_before_cropping"]), dtype=np.float32)
        full = insert_crop_into_image(full, resampled, props["bbox_used_for_cropping"])
        back = full.transpose([0, *[a + 1 for a in plans.transpose_backward]])
        # nnU-Net's axes are the Volume's reversed (see SAME_GRID_READERS).
        return np.ascontiguousarray(back.transpose(0, 3, 2, 1))

    def forward_labels(self, labels: np.ndarray) -> np.ndarray:
        """(1, I, J, K) labels on the source grid -> the preprocessed grid, as nnU-Net's seg."""
        from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

        props, plans = self.properties, self.plans_manager
        seg = np.asarray(labels).transpose(0, 3, 2, 1)
        seg = seg.transpose([0, *[a + 1 for a in plans.transpose_forward]])
        bbox = [list(b) for b in props["bbox_used_for_cropping"]]
        seg = crop_and_pad_nd(seg, [[0, seg.shape[0]], *bbox])
        spacing_t = [props["spacing"][i] for i in plans.transpose_forward]
        return np.asarray(
            self.configuration_manager.resampling_fn_seg(
                seg, self.preprocessed_shape, spacing_t, self.configuration_manager.spacing
            )
        )


@dataclass(frozen=True)
class NnunetModel:
    """What is read from a results folder: managers, dataset.json and the folds' weights."""

    folder: Path
    plans_manager: Any
    configuration_manager: Any
    dataset_json: dict[str, Any]
    trainer_name: str
    mirror_axes: tuple[int, ...] | None

    def prepare(self, volume: Volume) -> Prepared:
        """nnU-Net's preprocessing of ``volume``, recorded so maps can go back."""
        data = volume.array
        channels = len(self.dataset_json["channel_names"])
        name = volume.source.path
        if data.ndim == 3 and channels == 1:
            stack, params = data[None], ChannelsStep(source="single")
        elif data.ndim == 4 and data.shape[3] == channels:
            stack, params = np.moveaxis(data, 3, 0), ChannelsStep(source="last_axis")
        else:
            raise InputError(
                f"{name}: the nnU-Net model takes {channels} channel(s) "
                f"({', '.join(self.dataset_json['channel_names'].values())}) but the volume has "
                f"shape {data.shape}; give a 3D volume, or a 4D one with the channels last."
            )
        if not np.all(np.isfinite(stack)):
            raise InputError(f"{name}: the volume has NaN or infinite voxels; fix the image.")
        properties: dict[str, Any] = {"spacing": list(volume.geometry.spacing[::-1])}
        # nnU-Net's arrays are the file's grid with the axes reversed (SimpleITK order).
        arrays = np.ascontiguousarray(stack.transpose(0, 3, 2, 1), dtype=np.float32)
        preprocessor = self.configuration_manager.preprocessor_class(verbose=False)
        out, _, properties = preprocessor.run_case_npy(
            arrays, None, properties, self.plans_manager, self.configuration_manager,
            self.dataset_json,
        )  # fmt: skip
        out = np.ascontiguousarray(out, dtype=np.float32)
        steps = [
            AppliedChannels(params, stack.shape[0]),
            AppliedNnunet(
                self.plans_manager, self.configuration_manager, properties,
                tuple(int(n) for n in out.shape[1:]),
            ),
        ]  # fmt: skip
        return Prepared(volume, out, _grid_affine(volume.affine, self, properties, out), steps)


def _grid_affine(affine: np.ndarray, model: NnunetModel, props: dict, out: np.ndarray) -> Any:
    """Affine of the preprocessed grid (for the sidecar's native spacing and field of view)."""
    # Source index (i, j, k) -> nnU-Net's (k, j, i) -> transpose_forward -> crop -> resample.
    perm = [2, 1, 0]
    order = [perm[a] for a in model.plans_manager.transpose_forward]  # source axis of each axis
    step = np.zeros((4, 4))
    step[3, 3] = 1
    cropped = props["shape_after_cropping_and_before_resampling"]
    for axis, source_axis in enumerate(order):
        scale = cropped[axis] / out.shape[1 + axis]
        lo = props["bbox_used_for_cropping"][axis][0]
        # Resampling to a shape maps voxel centres: old = (new + 0.5) * scale - 0.5.
        step[source_axis, axis] = scale
        step[source_axis, 3] = lo + 0.5 * scale - 0.5
    return affine @ step


def _read_json(path: Path, key: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{key}: {path} is missing; give the trainer folder of a run.") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{key}: {path} cannot be read as JSON ({exc}).") from None


def _network(model: NnunetModel, weights: dict[str, torch.Tensor], path: Path) -> torch.nn.Module:
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    trainer = recursive_find_trainer_class_by_name(model.trainer_name)
    if trainer is None:
        raise ModelError(
            f"model.nnunet: trainer {model.trainer_name!r} named in {path} is not part of the "
            "installed nnunetv2; install the package that defines it."
        )
    plans, conf = model.plans_manager, model.configuration_manager
    inputs = determine_num_input_channels(plans, conf, model.dataset_json)
    outputs = plans.get_label_manager(model.dataset_json).num_segmentation_heads
    if "plans_manager" in inspect.signature(trainer.build_network_architecture).parameters:
        network = trainer.build_network_architecture(
            plans, conf, inputs, outputs, enable_deep_supervision=False
        )
    else:  # the older signature some custom trainers still have
        network = trainer.build_network_architecture(
            conf.network_arch_class_name, conf.network_arch_init_kwargs,
            conf.network_arch_init_kwargs_req_import, inputs, outputs,
            enable_deep_supervision=False,
        )  # fmt: skip
    try:
        network.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ModelError(
            f"model.nnunet: the weights in {path} do not fit the network of the plans ({first})."
        ) from None
    return network


def _checkpoint(path: Path, allow_pickle: bool) -> dict[str, Any]:
    if not path.is_file():
        raise ModelError(
            f"model.nnunet: {path} does not exist; check model.nnunet.folds and "
            "model.nnunet.checkpoint."
        )
    loaded = load_checkpoint(path, allow_pickle=allow_pickle, key="model.nnunet")
    if not isinstance(loaded, dict) or not isinstance(loaded.get("network_weights"), dict):
        raise ModelError(f"model.nnunet: {path} is not an nnU-Net checkpoint (no network_weights).")
    return loaded


def load_nnunet(section: NnunetSection, *, allow_pickle: bool, device: torch.device) -> BuiltModel:
    """Read an nnU-Net v2 results folder: one sliding-window member per fold."""
    _import_nnunet()
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = section.folder
    plans = _read_json(folder / "plans.json", "model.nnunet.folder")
    dataset_json = _read_json(folder / "dataset.json", "model.nnunet.folder")
    reader = plans.get("image_reader_writer", "SimpleITKIO")
    if reader not in SAME_GRID_READERS:
        raise ModelError(
            f"model.nnunet: the plans read images with {reader}, whose axis order xaimed cannot "
            "reproduce; retrain with SimpleITKIO or NibabelIO."
        )
    paths = [folder / fold / section.checkpoint for fold in section.fold_names()]
    checkpoints = [_checkpoint(path, allow_pickle) for path in paths]
    first = checkpoints[0]
    plans_manager = PlansManager(plans)
    configuration = first["init_args"]["configuration"]
    configuration_manager = plans_manager.get_configuration(configuration)
    if configuration_manager.previous_stage_name is not None:
        raise ModelError(
            f"model.nnunet: {configuration} is a cascade stage, which needs the previous stage's "
            "segmentation as input; explain the 3d_fullres or 3d_lowres model instead."
        )
    axes = first.get("inference_allowed_mirroring_axes")
    model = NnunetModel(
        folder, plans_manager, configuration_manager, dataset_json, first["trainer_name"],
        tuple(axes) if axes else None,
    )  # fmt: skip
    mirror = model.mirror_axes if section.mirroring else None
    members = []
    for checkpoint, path in zip(checkpoints, paths, strict=True):
        network = _network(model, checkpoint["network_weights"], path)
        patch = tuple(configuration_manager.patch_size)
        members.append(
            NnunetWindow(
                network, patch, step_size=section.step_size, mirror_axes=mirror,
                float16_result=len(paths) > 1,
            )
        )  # fmt: skip
    del checkpoints
    digest = hashlib.sha256()
    for path in [folder / "plans.json", folder / "dataset.json", *paths]:
        with path.open("rb") as fh:
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    module = members[0] if len(members) == 1 else EnsembleModule(members)
    return BuiltModel(
        module=module,
        members=tuple(members),
        file=folder,
        sha256=digest.hexdigest(),
        classes=nnunet_labels(folder),
        output="logits",
        prepare=model.prepare,
        details={
            "kind": "nnunet",
            "trainer": model.trainer_name,
            "configuration": configuration,
            "folds": [p.parent.name for p in paths],
            "checkpoint": section.checkpoint,
            "sliding_window": members[0].sidecar_fields(),
            "mirroring": section.mirroring,
        },
    )
