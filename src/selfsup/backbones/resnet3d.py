"""A small 3-D ResNet for volumes (the field kind ``volume``): the basic residual block of He et al., "Deep
Residual Learning for Image Recognition" (CVPR 2016) with 3x3x3 convolutions, as in the 3-D ResNets of Hara
et al., "Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?" (CVPR 2018).

``resnet3d_small``: a 3x3x3 Conv3d stem at stride 1 (no max-pool: 16^3 volumes are small already), three
stages of widths (16, 32, 64), the last two at stride 2, global average pooling; about 0.2 M parameters, so
contrastive methods (SimCLR) train it on a few CPU cores.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from selfsup.backbones.base import BACKBONES


class BasicBlock3d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv3d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(out_ch)
        self.conv2 = nn.Conv3d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv3d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm3d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


@BACKBONES.register("resnet3d_small")
class ResNet3D(nn.Module):
    """(B, C, D, H, W) -> (B, widths[-1]) pooled features."""

    field_kind = "volume"

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64), blocks_per_stage: int = 1):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        self.spec = {"name": "resnet3d_small", "in_channels": int(in_channels), "widths": list(widths),
                     "blocks_per_stage": int(blocks_per_stage)}
        self.stem = nn.Sequential(nn.Conv3d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm3d(widths[0]),
                                  nn.ReLU(inplace=True))
        layers, in_ch = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                layers.append(BasicBlock3d(in_ch, width, stride=2 if (i > 0 and j == 0) else 1))
                in_ch = width
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.num_features = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"a 3-D ResNet takes volumes (B, C, D, H, W), got shape {tuple(x.shape)}")
        return self.pool(self.stages(self.stem(x))).flatten(1)
