"""The incremental engine through region-reduced segmentation targets: exact maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_method
from torch import nn

from xaimed.config import TargetSection
from xaimed.engine.targets import TargetReduction


class _Case:
    case_id = "c"
    mask = None


class SkipUNet(nn.Module):
    """Two levels, a skip connection by concatenation, trilinear upsampling, batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU())
        self.pool = nn.MaxPool3d(2)
        self.mid = nn.Sequential(nn.Conv3d(4, 8, 3, padding=1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.head = nn.Sequential(nn.Conv3d(12, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down(x)
        deep = self.up(self.mid(self.pool(skip)))
        return self.head(torch.cat([skip, deep], dim=1))


def _monai_unet() -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2),
        num_res_units=1, norm="batch",
    )  # fmt: skip


def _trained_statistics(net: nn.Module, x: torch.Tensor) -> nn.Module:
    net.train()
    with torch.no_grad():
        for k in range(3):
            net(x + 0.1 * k)
    return net.eval().double()


def _scored(net: nn.Module, x: torch.Tensor, score: str) -> TargetReduction:
    spec = TargetSection.model_validate({"region": "predicted", "reduction": "sum", "score": score})
    reduction = TargetReduction(net, spec, output="logits")
    with torch.no_grad():
        reduction.fix_regions(net(x), x, _Case())  # type: ignore[arg-type]
    return reduction


@pytest.mark.parametrize("score", ["logits", "probabilities"])
@pytest.mark.parametrize("build", [SkipUNet, _monai_unet], ids=["skip_unet", "monai_unet"])
def test_incremental_occlusion_of_a_region_target_equals_plain(build, score):
    torch.manual_seed(0)
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(4)).double()
    net = _trained_statistics(build(), x.float())
    params = {"window": 4, "stride": 4}
    plain, plain_details, _ = run_method("occlusion", _scored(net, x, score), x, **params)
    ours, details, count = run_method(
        "occlusion", _scored(net, x, score), x, engine="incremental", **params
    )
    assert plain_details["engine"] == "plain" and details["engine"] == "incremental"
    scale = float(plain.abs().max())
    assert scale > 0
    assert float((ours - plain).abs().max()) <= 1e-4 * scale
    assert count.forward == details["windows"] + 2
    # Less work than whole passes, although upsampling spreads each window's change.
    assert count.full_pass_equivalent < details["windows"]


def _instance_unet() -> nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(
        spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2),
        num_res_units=1, norm="instance",
    ).eval()  # fmt: skip


def _smooth(shape) -> torch.Tensor:
    from scipy import ndimage

    data = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=shape), 2.0)
    data = (data - data.mean()) / data.std()
    return torch.from_numpy(data.astype(np.float32))[None, None]


def test_instance_norm_is_exact_by_default_and_frozen_statistics_correlate():
    net, x = _instance_unet(), _smooth((16, 16, 16))
    params = {"window": 4, "stride": 4}
    plain, _, _ = run_method("occlusion", _scored(net, x, "logits"), x, **params)
    exact, details, _ = run_method(
        "occlusion", _scored(net, x, "logits"), x, engine="incremental", **params
    )
    scale = float(plain.abs().max())
    assert float((exact - plain).abs().max()) <= 1e-4 * scale
    # Exact: from the first instance norm on, whole maps, and the sidecar says why.
    assert "per-sample statistics" in details["whole_maps_from"][0]["reason"]
    assert details["frozen_norm_statistics"] == []
    frozen, fdetails, _ = run_method(
        "occlusion", _scored(net, x, "logits"), x, engine="incremental",
        approximate={"freeze_norm_statistics": True}, **params,
    )  # fmt: skip
    assert fdetails["approximate"]["freeze_norm_statistics"] is True
    assert len(fdetails["frozen_norm_statistics"]) >= 4
    assert fdetails["norm_statistics_correction"] == "first_order"
    assert details["norm_statistics_correction"] is None
    assert fdetails["whole_maps_from"] == [] or all(
        "per-sample" not in w["reason"] for w in fdetails["whole_maps_from"]
    )
    # An approximation: not the exact map, but one that agrees with it.
    assert float((frozen - plain).abs().max()) > 1e-4 * scale
    corr = np.corrcoef(frozen.flatten().numpy(), plain.flatten().numpy())[0, 1]
    # 0.998 with the first-order correction for the statistics' shift (0.70 with the local
    # change alone); the largest difference is 5% of the largest value.
    assert corr > 0.99
    assert float((frozen - plain).abs().max()) < 0.1 * scale
