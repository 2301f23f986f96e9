"""A small ResNet sized for CPU pre-training at 32 px.

Same block structure as ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", 2016) with
the CIFAR stem (3x3 conv, no max-pool), but narrower stages and one block per stage, so that a training
step costs about 1/20 of a CIFAR ResNet-18's FLOPs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from selfsup.backbones.base import BACKBONES


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


@BACKBONES.register("small_resnet")
class SmallResNet(nn.Module):
    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (32, 64, 128, 256), blocks_per_stage: int = 1,
                 stem_stride: int = 1):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        self.spec = {"name": "small_resnet", "in_channels": in_channels, "widths": list(widths),
                     "blocks_per_stage": blocks_per_stage, "stem_stride": stem_stride}
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False), nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True)
        )
        layers, in_ch = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                layers.append(BasicBlock(in_ch, width, stride=2 if (i > 0 and j == 0) else 1))
                in_ch = width
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, (B, num_features, H / stride, W / stride), before pooling (SimMIM's decoder
        reads it)."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_features(x)).flatten(1)
