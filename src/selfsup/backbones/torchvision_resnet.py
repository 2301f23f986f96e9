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

from selfsup.backbones.base import BACKBONES

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


def resnet_replacements(in_channels: int = 3, cifar_stem: bool = False) -> dict[str, tuple[str, tuple, dict]]:
    """The modules our backbone puts in place of a torchvision ResNet's own, as ``{attribute: (nn class name,
    args, kwargs)}``: the stem (3x3 stride-1 conv and no max-pool for the CIFAR stem; a 7x7 conv for other
    channel counts) and ``fc = Identity``. The one description both the backbone and its torchvision export use."""
    changes: dict[str, tuple[str, tuple, dict]] = {}
    if cifar_stem:
        changes["conv1"] = ("Conv2d", (in_channels, 64), {"kernel_size": 3, "stride": 1, "padding": 1, "bias": False})
        changes["maxpool"] = ("Identity", (), {})
    elif in_channels != 3:
        changes["conv1"] = ("Conv2d", (in_channels, 64), {"kernel_size": 7, "stride": 2, "padding": 3, "bias": False})
    changes["fc"] = ("Identity", (), {})
    return changes


def replacement_code(in_channels: int = 3, cifar_stem: bool = False) -> dict[str, str]:
    """:func:`resnet_replacements` as Python expressions, ``{attribute: "nn.Conv2d(3, 64, kernel_size=3, ...)"}``."""
    return {attr: f"nn.{cls}({', '.join([*map(repr, args), *(f'{k}={v!r}' for k, v in kwargs.items())])})"
            for attr, (cls, args, kwargs) in resnet_replacements(in_channels, cifar_stem).items()}


def apply_replacements(model: nn.Module, in_channels: int = 3, cifar_stem: bool = False) -> nn.Module:
    """Put :func:`resnet_replacements` into the torchvision ResNet ``model`` (in place); returns ``model``."""
    for attr, (cls, args, kwargs) in resnet_replacements(in_channels, cifar_stem).items():
        setattr(model, attr, getattr(nn, cls)(*args, **kwargs))
    return model


def make_torchvision_resnet(arch: str, in_channels: int = 3, cifar_stem: bool = False) -> nn.Module:
    """The torchvision model ``arch`` with our stem changes and no classifier (random init)."""
    model = apply_replacements(getattr(torchvision.models, arch)(weights=None), in_channels, cifar_stem)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
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


def _resnet_factory(arch: str):
    def build(in_channels: int = 3, cifar_stem: bool = False) -> TorchvisionResNet:
        return TorchvisionResNet(arch, in_channels, cifar_stem)
    return build


for _arch in TORCHVISION_RESNETS:
    BACKBONES.add(_arch, _resnet_factory(_arch))
