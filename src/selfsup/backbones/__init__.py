"""Backbones (encoders of the field kind ``image``), registered where each is defined in :data:`BACKBONES`.

Names: a registered name (``small_resnet``, ``resnet18``, ``vit_tiny_cpu`` ...), ``timm:<model name>`` for any
timm model, or ``open_clip:<arch>`` for the image tower of an open_clip model (see
:mod:`selfsup.backbones.open_clip_towers`). ViTs (registered ones and plain timm ViTs) are
:class:`~selfsup.backbones.vit.ViTBackbone` and also give token-level access (``forward_tokens``, token
dropping, mask tokens; see :mod:`selfsup.backbones.vit`).
The contract every backbone keeps (``num_features``, ``spec``) is in :mod:`selfsup.backbones.base`.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from selfsup.backbones.base import BACKBONES
from selfsup.backbones.open_clip_towers import OPEN_CLIP_PREFIX, build_open_clip_image_tower
from selfsup.backbones.timm_adapter import TimmBackbone
from selfsup.backbones.vit import ViTBackbone, as_vit_backbone
from selfsup.registry import import_submodules

DEFAULT_BACKBONE = "small_resnet"
TIMM_PREFIX = "timm:"


def build_backbone(name: str, in_channels: int = 3, **options: Any) -> nn.Module:
    """Build a backbone by registry name, ``timm:<name>`` or ``open_clip:<arch>``, taking ``in_channels`` channels."""
    if name.startswith(TIMM_PREFIX):
        return as_vit_backbone(TimmBackbone(model_name=name[len(TIMM_PREFIX):], in_channels=in_channels, **options))
    if name.startswith(OPEN_CLIP_PREFIX):
        return build_open_clip_image_tower(name[len(OPEN_CLIP_PREFIX):], in_channels, **options)
    return BACKBONES.get(name)(in_channels=in_channels, **options)


def backbone_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a backbone from its ``spec`` dict (as saved next to exported weights)."""
    spec = dict(spec)
    return build_backbone(spec.pop("name"), spec.pop("in_channels", 3), **spec)


# Last: modules such as towers.py build on the functions above.
import_submodules(__name__, skip=("base",))

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "ViTBackbone", "build_backbone", "backbone_from_spec"]
