"""Backbone registry.

Every backbone is an ``nn.Module`` whose ``forward(x)`` returns pooled features of shape
``(batch, num_features)`` and which carries:

- ``num_features``: width of the pooled features;
- ``spec``: a JSON-able dict (``name``, ``in_channels`` and the build options) from which
  :func:`build_backbone` rebuilds the same architecture; export and ``load_backbone`` rely on it.

Names: a registered name (``small_resnet``, ``resnet18``, ``vit_tiny_cpu`` ...) or ``timm:<model name>`` for any
timm model. ViTs (registered ones and plain timm ViTs) are :class:`~selfsup.backbones.vit.ViTBackbone` and also
give token-level access (``forward_tokens``, token dropping, mask tokens; see :mod:`selfsup.backbones.vit`).
"""
from __future__ import annotations

import difflib
from typing import Any, Callable

import torch.nn as nn

from selfsup.backbones.small import SmallResNet
from selfsup.backbones.timm_adapter import TimmBackbone
from selfsup.backbones.torchvision_resnet import TORCHVISION_RESNETS, TorchvisionResNet
from selfsup.backbones.vit import VIT_CONFIGS, ViTBackbone, as_vit_backbone, build_registered_vit

BackboneFactory = Callable[..., nn.Module]

BACKBONES: dict[str, BackboneFactory] = {"small_resnet": SmallResNet}
for _arch in TORCHVISION_RESNETS:
    BACKBONES[_arch] = lambda _arch=_arch, **kw: TorchvisionResNet(arch=_arch, **kw)
for _vit in VIT_CONFIGS:
    BACKBONES[_vit] = lambda _vit=_vit, **kw: build_registered_vit(_vit, **kw)

DEFAULT_BACKBONE = "small_resnet"


def build_backbone(name: str, in_channels: int = 3, **options: Any) -> nn.Module:
    """Build a backbone by registry name or ``timm:<name>`` with ``in_channels`` input channels."""
    if name.startswith("timm:"):
        return as_vit_backbone(TimmBackbone(model_name=name[len("timm:"):], in_channels=in_channels, **options))
    if name not in BACKBONES:
        close = difflib.get_close_matches(name, list(BACKBONES), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(
            f"unknown backbone '{name}'.{hint} Registered: {', '.join(sorted(BACKBONES))}; "
            "or use 'timm:<model name>' for any timm model."
        )
    return BACKBONES[name](in_channels=in_channels, **options)


def backbone_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a backbone from its ``spec`` dict (as saved next to exported weights)."""
    spec = dict(spec)
    return build_backbone(spec.pop("name"), spec.pop("in_channels", 3), **spec)


__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "ViTBackbone", "build_backbone", "backbone_from_spec"]
