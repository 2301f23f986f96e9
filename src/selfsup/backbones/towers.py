"""Two towers in one embedding space: an image encoder and a text encoder, each with its projection, and the
learnable logit scale (and, for SigLIP, bias) of the image-text losses.

The image tower is any selfsup backbone (field kind ``image``), the text tower any text encoder
(:mod:`selfsup.backbones.text`, field kind ``text``). A tower whose output already lies in the joint space
(an open_clip tower, which carries ``projected = True`` and ``num_features == embed_dim``) gets no extra
projection, so a loaded open_clip model computes exactly what open_clip computes. ``spec`` rebuilds the
architecture (``towers_from_spec``); the image-text methods (CLIP, SigLIP, ConVIRT, SLIP) own one, the run
saves it beside the backbone, and zero-shot evaluation and image-text retrieval read it.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from selfsup.backbones import backbone_from_spec
from selfsup.backbones.text import text_encoder_from_spec


def _projection(tower: nn.Module, embed_dim: int, hidden_dim: int | None) -> nn.Module:
    """Linear (CLIP), or with ``hidden_dim`` a two-layer MLP (ConVIRT's non-linear projections g_v, g_u)."""
    if getattr(tower, "projected", False) and tower.num_features == embed_dim:
        return nn.Identity()
    if hidden_dim:
        return nn.Sequential(nn.Linear(tower.num_features, hidden_dim), nn.ReLU(inplace=True),
                             nn.Linear(hidden_dim, embed_dim))
    return nn.Linear(tower.num_features, embed_dim, bias=False)


class ImageTextTowers(nn.Module):
    """``encode_image(images)`` and ``encode_text(tokens)`` into one ``embed_dim`` space (L2-normalized by
    default); ``logit_scale`` is stored as a log, as in CLIP (Radford et al., ICML 2021), and the losses clamp
    its exponential at 100."""

    def __init__(self, image: nn.Module, text: nn.Module, embed_dim: int, *,
                 init_logit_scale: float = math.log(1 / 0.07), init_logit_bias: float | None = None,
                 projection_hidden_dim: int | None = None):
        super().__init__()
        self.image, self.text, self.embed_dim = image, text, int(embed_dim)
        self.projection_hidden_dim = projection_hidden_dim
        self.image_projection = _projection(image, self.embed_dim, projection_hidden_dim)
        self.text_projection = _projection(text, self.embed_dim, projection_hidden_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.logit_bias = None if init_logit_bias is None else nn.Parameter(torch.tensor(float(init_logit_bias)))

    @property
    def context_length(self) -> int:
        return int(self.text.context_length)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z = self.image_projection(self.image(images))
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z = self.text_projection(self.text(tokens))
        return F.normalize(z, dim=-1) if normalize else z

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(tokens)

    @property
    def spec(self) -> dict[str, Any]:
        return {"image": dict(self.image.spec), "text": dict(self.text.spec), "embed_dim": self.embed_dim,
                "logit_bias": self.logit_bias is not None, "projection_hidden_dim": self.projection_hidden_dim}


def towers_from_spec(spec: dict[str, Any]) -> ImageTextTowers:
    """The architecture ``spec`` describes, freshly initialised (load a state dict into it)."""
    return ImageTextTowers(backbone_from_spec(spec["image"]), text_encoder_from_spec(spec["text"]),
                           spec["embed_dim"], init_logit_bias=0.0 if spec.get("logit_bias") else None,
                           projection_hidden_dim=spec.get("projection_hidden_dim"))
