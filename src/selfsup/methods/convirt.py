"""ConVIRT: Zhang, Jiang, Miura, Manning, Langlotz, "Contrastive Learning of Medical Visual Representations
from Paired Images and Text", MLHC 2022 (arXiv:2010.00747).

The predecessor of CLIP, built for medical images and their reports: an image encoder and a text encoder, each
followed by a two-layer non-linear projection, trained with a bidirectional InfoNCE whose two directions are
weighted (lambda = 0.75 on image-to-text) at a fixed temperature (0.1). The images are augmented more strongly
than CLIP's (crops, flips, colour jitter, blur); on a report with several sentences, one sentence is sampled
per step (the source's captions of a sample play that role here).
"""
from __future__ import annotations

import torch.nn as nn
from pydantic import Field

from selfsup.losses import convirt_loss
from selfsup.methods.base import METHODS, StepOutput
from selfsup.methods.common import Probability, Scale, Strength
from selfsup.methods.parts.image_text import TEST_TEXT_OPTIONS, ImageTextMethod, ImageTextOptions, text_spec
from selfsup.views import ViewSpec


class ConVIRTOptions(ImageTextOptions):
    temperature: float = Field(0.1, gt=0)  # fixed (the paper's tau)
    image_to_text_weight: Probability = 0.75  # lambda: weight of the image->text direction
    projection_hidden_dim: int = Field(512, ge=1)  # the non-linear projections g_v, g_u
    crop_scale: Scale = (0.4, 1.0)
    colour_strength: Strength = 0.5  # the paper jitters brightness and contrast (0.4) of the radiographs
    blur_p: Probability = 0.5


@METHODS.register("convirt")
class ConVIRT(ImageTextMethod):
    Options = ConVIRTOptions
    test_options = {**TEST_TEXT_OPTIONS, "projection_hidden_dim": 16}

    def __init__(self, backbone: nn.Module, options: ConVIRTOptions):
        super().__init__()
        self.towers = options.build_towers(backbone, temperature=options.temperature,
                                           projection_hidden_dim=options.projection_hidden_dim)
        self.towers.logit_scale.requires_grad_(False)  # ConVIRT's temperature is fixed
        self.temperature, self.weight = options.temperature, options.image_to_text_weight
        self.views = ViewSpec(crops=(options.image_crop(1),), text=text_spec(self.towers))

    def forward(self, batch: dict) -> StepOutput:
        image, text = self.towers(batch["views"][0], batch["text"])
        loss = convirt_loss(image, text, temperature=self.temperature, weight=self.weight)
        return StepOutput(loss=loss, embeddings=image.detach())
