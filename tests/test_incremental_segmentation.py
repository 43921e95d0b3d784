"""The incremental engine through region-reduced segmentation targets: exact maps."""

from __future__ import annotations

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
