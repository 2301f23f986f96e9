"""Text encoders (the field kind ``text``), registered where each is defined in :data:`TEXT_ENCODERS`.

A text encoder is an ``nn.Module`` whose ``forward(tokens)`` maps ``(batch, context_length)`` int64 token ids
(open_clip's BPE, :mod:`selfsup.views.text`) to pooled features ``(batch, num_features)``; it carries
``num_features``, ``context_length``, ``vocab_size``, ``spec`` (a JSON-able dict: ``name`` and the build
options, from which :func:`text_encoder_from_spec` rebuilds it) and ``projected`` (True when its output already
lies in a joint image-text space, as an open_clip text tower's does).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from selfsup.config import ConfigError
from selfsup.registry import Registry

TEXT_ENCODERS: Registry[Callable[..., nn.Module]] = Registry(
    "text encoder", key="method_options.text_encoder", error=ConfigError)


def build_text_encoder(name: str, **options: Any) -> nn.Module:
    """Build a text encoder by registry name."""
    return TEXT_ENCODERS.get(name)(**options)


def text_encoder_from_spec(spec: dict[str, Any]) -> nn.Module:
    spec = dict(spec)
    return build_text_encoder(spec.pop("name"), **spec)
