"""What the image-text methods (CLIP, SigLIP, ConVIRT, SLIP) share: the text tower's options, the image view,
and the two towers (:class:`~selfsup.backbones.towers.ImageTextTowers`) built around the run's backbone.

The image tower is the run's backbone (what gets exported and evaluated like any other); the text tower is a
text encoder by name (``text_micro_cpu``, or any ``open_clip:<arch>`` tower); each gets a projection into a
shared ``embed_dim`` space unless it already lies there (open_clip towers).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch.nn as nn
from pydantic import Field

from selfsup.backbones.text import build_text_encoder
from selfsup.backbones.towers import ImageTextTowers
from selfsup.methods.base import Method, MethodOptions
from selfsup.methods.common import Probability, Scale, Strength, simclr_crops
from selfsup.views import CropSpec, TextSpec


class ImageTextOptions(MethodOptions):
    """The text tower and the image view of an image-text method (``method_options.*``)."""

    text_encoder: str = "text_micro_cpu"  # a name in TEXT_ENCODERS, or open_clip:<arch>
    text_options: dict[str, Any] = Field(default_factory=dict)  # e.g. {width: 256, layers: 6}, {weights: file}
    embed_dim: int = Field(128, ge=1)  # the joint space (ignored for towers already projected into one)
    # CLIP trains on a random square crop and nothing else (Radford et al. 2021, section 2.5): a caption
    # describes the whole picture, so crops stay large and colours untouched by default.
    crop_scale: Scale = (0.6, 1.0)
    colour_strength: Strength = 0.0
    grayscale_p: Probability = 0.0
    blur_p: Probability = 0.0

    def image_crop(self, count: int = 1) -> CropSpec:
        crop = simclr_crops(count, self.crop_scale, self.colour_strength, self.blur_p, self.grayscale_p)
        return crop if self.colour_strength > 0 else dataclasses.replace(crop, jitter_p=0.0)  # no no-op jitter

    def build_towers(self, backbone: nn.Module, *, temperature: float, logit_bias: float | None = None,
                     projection_hidden_dim: int | None = None) -> ImageTextTowers:
        """The two towers around ``backbone``; the logit scale starts at 1 / ``temperature`` (stored as a log)."""
        text = build_text_encoder(self.text_encoder, **self.text_options)
        embed_dim = self.embed_dim
        if getattr(backbone, "projected", False) and getattr(text, "projected", False) \
                and backbone.num_features == text.num_features:  # two towers of one joint space (open_clip's)
            embed_dim = backbone.num_features
        return ImageTextTowers(backbone, text, embed_dim, init_logit_scale=math.log(1 / temperature),
                               init_logit_bias=logit_bias, projection_hidden_dim=projection_hidden_dim)


class ImageTextMethod(Method):
    """What every image-text method shares beyond the contract: its two towers in ``self.towers``, whose image
    tower is the exported backbone, and which the run saves for zero-shot evaluation."""

    towers: ImageTextTowers

    @property
    def backbone(self) -> nn.Module:
        return self.towers.image

    def image_text_towers(self) -> ImageTextTowers:
        return self.towers


def text_spec(towers: ImageTextTowers) -> TextSpec:
    """One caption per sample, tokenized to the text tower's context length."""
    return TextSpec(context_length=towers.context_length)


#: tiny text towers for the parametrized method tests
TEST_TEXT_OPTIONS = {"embed_dim": 16, "text_options": {"width": 32, "heads": 2, "layers": 1, "context_length": 16}}
