"""torchvision ResNets (He et al., 2016) as backbones, with the CIFAR stem option.

The CIFAR stem (3x3 stride-1 first convolution, no max-pool) keeps 32 px inputs at full resolution in the
first stage, which is what CIFAR-scale SSL results (SimCLR appendix B.9, solo-learn, lightly) are reported
with. ``self.model`` is an unmodified torchvision ResNet apart from the stem and ``fc = Identity``, so its
state dict is the torchvision one.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torchvision

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


def make_torchvision_resnet(arch: str, in_channels: int = 3, cifar_stem: bool = False) -> nn.Module:
    """The torchvision model ``arch`` with our stem changes and no classifier (random init)."""
    model = getattr(torchvision.models, arch)(weights=None)
    if cifar_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.fc = nn.Identity()
    return model


class TorchvisionResNet(nn.Module):
    def __init__(self, arch: str = "resnet18", in_channels: int = 3, cifar_stem: bool = False):
        super().__init__()
        self.spec = {"name": arch, "in_channels": in_channels, "cifar_stem": bool(cifar_stem)}
        self.model = make_torchvision_resnet(arch, in_channels, cifar_stem)
        self.num_features = 2048 if arch in ("resnet50", "resnet101") else 512

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (layer4's output), (B, num_features, h, w), before pooling."""
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer4(m.layer3(m.layer2(m.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
