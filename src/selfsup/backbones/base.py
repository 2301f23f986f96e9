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

import torch.nn as nn

from selfsup.config import ConfigError
from selfsup.registry import Registry

BACKBONES: Registry[Callable[..., nn.Module]] = Registry(
    "backbone", key="backbone.name", error=ConfigError, also="or use 'timm:<model name>' for any timm model, 'open_clip:<architecture>' for an open_clip image tower")
