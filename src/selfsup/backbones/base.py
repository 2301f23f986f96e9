"""The backbone registry and contract.

Every backbone is an ``nn.Module`` whose ``forward(x)`` returns pooled features of shape ``(batch,
num_features)`` and which carries ``num_features`` (the width of those features) and ``spec`` (a JSON-able
dict: ``name``, ``in_channels`` and the build options, from which :func:`selfsup.backbones.build_backbone`
rebuilds the same architecture; export and ``load_backbone`` rely on it). An entry of :data:`BACKBONES` is a
factory ``(in_channels=..., **options) -> backbone``, registered where the backbone is defined; it encodes
the field kind ``image`` (:mod:`selfsup.fields`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from selfsup.config import ConfigError
from selfsup.registry import Registry

BACKBONES: Registry[Callable[..., nn.Module]] = Registry(
    "backbone", key="backbone.name", error=ConfigError, also="or use 'timm:<model name>' for any timm model, 'open_clip:<architecture>' for an open_clip image tower")


def pooled_features(backbone: nn.Module, images: torch.Tensor, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``backbone(images)`` (under autocast at ``autocast_dtype`` when given), checked to be pooled features
    (batch, dims): what evaluation and ``selfsup embed`` read."""
    if autocast_dtype is not None:
        with torch.autocast(device_type=images.device.type, dtype=autocast_dtype):
            out = backbone(images)
    else:
        out = backbone(images)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != images.shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the backbone must return pooled features (batch, dims); got {got}")
    return out
