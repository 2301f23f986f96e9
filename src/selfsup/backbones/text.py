"""Text encoders (the field kind ``text``), registered where each is defined in :data:`TEXT_ENCODERS`.

A text encoder is an ``nn.Module`` whose ``forward(tokens)`` maps ``(batch, context_length)`` int64 token ids
(open_clip's BPE, :mod:`selfsup.views.text`) to pooled features ``(batch, num_features)``; it carries
``num_features``, ``context_length``, ``vocab_size``, ``spec`` (a JSON-able dict: ``name`` and the build
options, from which :func:`text_encoder_from_spec` rebuilds it) and ``projected`` (True when its output already
lies in a joint image-text space, as an open_clip text tower's does).

Encoders:

- ``text_micro_cpu`` (width 128, 4 heads, 3 layers) and ``text_tiny_cpu`` (width 256, 4 heads, 6 layers), both
  with a context of 32 tokens: CLIP's text transformer (Radford et al., "Learning Transferable Visual Models
  From Natural Language Supervision", ICML 2021: token and learned position embeddings, pre-norm blocks under
  a causal mask, final LayerNorm, the features of the end-of-text token), built from open_clip's own
  ``TextTransformer`` without its projection (``projected = False``, ``num_features = width``: the towers add
  one). ``context_length``, ``width``, ``heads``, ``layers`` and ``mlp_ratio`` are options.
- ``open_clip:<arch>``: the text tower of any open_clip architecture, by name or model-config file, with open_clip's
  projection (``projected = True``, ``num_features = embed_dim``) and optional local ``weights``
  (:mod:`selfsup.backbones.open_clip_towers`).

open_clip is the ``text`` extra: this module imports without it; building an encoder needs it and says so.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from selfsup.backbones.open_clip_towers import OPEN_CLIP_PREFIX, build_open_clip_text_tower
from selfsup.config import ConfigError
from selfsup.registry import Registry
from selfsup.views.text import BPE_VOCAB_SIZE, require_text_extra

TEXT_ENCODERS: Registry[Callable[..., nn.Module]] = Registry(
    "text encoder", key="method_options.text_encoder", error=ConfigError,
    also="or use 'open_clip:<arch>' for the text tower of any open_clip architecture")


def build_text_encoder(name: str, **options: Any) -> nn.Module:
    """Build a text encoder by registry name or ``open_clip:<arch>``."""
    if name.startswith(OPEN_CLIP_PREFIX):
        return build_open_clip_text_tower(name[len(OPEN_CLIP_PREFIX):], **options)
    return TEXT_ENCODERS.get(name)(**options)


def text_encoder_from_spec(spec: dict[str, Any]) -> nn.Module:
    spec = dict(spec)
    return build_text_encoder(spec.pop("name"), **spec)


# Small CLIP text transformers for CPU runs (captions of a dozen words fit in 32 tokens).
TEXT_CONFIGS: dict[str, dict[str, Any]] = {
    # 0.6 M parameters besides the token embedding (6.3 M), for CI-sized runs.
    "text_micro_cpu": {"width": 128, "heads": 4, "layers": 3},
    # 4.7 M parameters besides the token embedding (12.6 M).
    "text_tiny_cpu": {"width": 256, "heads": 4, "layers": 6},
}
TEXT_DEFAULTS: dict[str, Any] = {"context_length": 32, "mlp_ratio": 4.0}


class CLIPTextEncoder(nn.Module):
    """CLIP's text transformer (open_clip's ``TextTransformer``, no projection): ``(B, context_length)`` token
    ids -> ``(B, width)``, the final-norm features of each sequence's end-of-text token (its highest id)."""

    projected = False

    def __init__(self, name: str, *, context_length: int, width: int, heads: int, layers: int, mlp_ratio: float):
        super().__init__()
        if width % heads:
            raise ConfigError(f"text encoder {name}: width {width} is not divisible by heads {heads}")
        open_clip = require_text_extra()
        # output_dim=None: no text projection (ImageTextTowers owns it); causal mask and argmax (EOT) pooling
        # are TextTransformer's defaults, as in CLIP.
        self.model = open_clip.transformer.TextTransformer(
            context_length=context_length, vocab_size=BPE_VOCAB_SIZE, width=width, heads=heads, layers=layers,
            mlp_ratio=mlp_ratio, output_dim=None)
        self.num_features, self.context_length, self.vocab_size = int(width), int(context_length), BPE_VOCAB_SIZE
        self.spec = {"name": name, "context_length": int(context_length), "width": int(width), "heads": int(heads),
                     "layers": int(layers), "mlp_ratio": float(mlp_ratio)}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)


def _register_clip_text_encoder(name: str, config: dict[str, Any]) -> None:
    def build(**options: Any) -> CLIPTextEncoder:
        unknown = sorted(set(options) - set(config) - set(TEXT_DEFAULTS))
        if unknown:
            raise ConfigError(f"text encoder {name} has no option(s) {unknown}; options: "
                              f"{sorted(set(config) | set(TEXT_DEFAULTS))}")
        return CLIPTextEncoder(name, **{**TEXT_DEFAULTS, **config, **options})

    TEXT_ENCODERS.add(name, build)


for _name, _config in TEXT_CONFIGS.items():
    _register_clip_text_encoder(_name, _config)
