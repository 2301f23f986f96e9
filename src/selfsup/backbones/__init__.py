"""Backbones (encoders of the field kind ``image``), registered where each is defined in :data:`BACKBONES`.

Names: a registered name (``small_resnet``, ``resnet18``, ``vit_tiny_cpu`` ...), ``timm:<model name>`` for any
timm model, or ``open_clip:<arch>`` for the image tower of an open_clip model (see
:mod:`selfsup.backbones.open_clip_towers`). ViTs (registered ones and plain timm ViTs) are
:class:`~selfsup.backbones.vit.ViTBackbone` and also give token-level access (``forward_tokens``, token
dropping, mask tokens; see :mod:`selfsup.backbones.vit`).
The contract every backbone keeps (``num_features``, ``spec``) is in :mod:`selfsup.backbones.base`.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch.nn as nn

from selfsup.backbones.base import BACKBONES
from selfsup.backbones.channels import carry_state_dict, input_layer_key
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


def carry_backbone(rgb_backbone: nn.Module, channels: int, mode: str = "repeat",
                   rgb_bands: Sequence[int] | None = None) -> nn.Module:
    """The same architecture as ``rgb_backbone`` (its ``spec``, with ``in_channels=channels``) with its weights,
    the input layer carried to ``channels`` bands (:func:`carry_input_weight`) and loaded strictly.

    The new backbone is in training mode, like every freshly built one; call ``.eval()`` to compare outputs.
    """
    key = input_layer_key(rgb_backbone)
    options = dict(rgb_backbone.spec)
    name = options.pop("name")
    options.pop("in_channels", None)
    carried = build_backbone(name, channels, **options)
    new_key = input_layer_key(carried)
    if new_key != key:  # the same architecture must put its input layer in the same place
        raise ValueError(f"backbone '{name}': the input layer is {key!r} at {rgb_backbone.spec['in_channels']} "
                         f"channels but {new_key!r} at {channels}")
    carried.load_state_dict(carry_state_dict(rgb_backbone.state_dict(), key, channels, mode, rgb_bands), strict=True)
    return carried


def backbone_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a backbone from its ``spec`` dict (as saved next to exported weights)."""
    spec = dict(spec)
    return build_backbone(spec.pop("name"), spec.pop("in_channels", 3), **spec)


# Last: modules such as towers.py build on the functions above.
import_submodules(__name__, skip=("base",))

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "ViTBackbone", "build_backbone", "backbone_from_spec", "carry_backbone"]
