"""SLIP: Mu, Kirillov, Wagner, Xie, "SLIP: Self-supervision meets Language-Image Pre-training", ECCV 2022
(arXiv:2112.12750).

CLIP plus a SimCLR objective on the image tower: each image gives one view for the CLIP loss against its
caption and two more, augmented as SimCLR augments them, for an NT-Xent loss through its own MLP projector;
the loss is their sum (the SimCLR term weighted by ``ssl_scale``). Self-supervision makes the image tower learn
from what the captions do not say.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.heads import mlp
from selfsup.losses import clip_loss, nt_xent
from selfsup.methods.base import METHODS, StepOutput
from selfsup.methods.common import Probability, Scale, Strength, simclr_crops
from selfsup.methods.parts.image_text import TEST_TEXT_OPTIONS, ImageTextMethod, ImageTextOptions, text_spec
from selfsup.views import ViewSpec


class SLIPOptions(ImageTextOptions):
    temperature: float = Field(0.07, gt=0)  # CLIP's initial temperature (learnt)
    ssl_temperature: float = Field(0.1, gt=0)  # SimCLR's (the paper's 0.1)
    ssl_scale: float = Field(1.0, ge=0)  # weight of the SimCLR loss
    projector_hidden_dim: int = Field(512, ge=1)  # the paper: 3 layers of 4096, 256 out at ImageNet scale
    projector_out_dim: int = Field(128, ge=1)
    ssl_crop_scale: Scale = (0.08, 1.0)
    ssl_colour_strength: Strength = 0.5
    ssl_blur_p: Probability = 0.5


@METHODS.register("slip")
class SLIP(ImageTextMethod):
    Options = SLIPOptions
    test_options = {**TEST_TEXT_OPTIONS, "projector_hidden_dim": 32, "projector_out_dim": 16}

    def __init__(self, backbone: nn.Module, options: SLIPOptions):
        super().__init__()
        self.towers = options.build_towers(backbone, temperature=options.temperature)
        self.projector = mlp(backbone.num_features, options.projector_hidden_dim, options.projector_out_dim, 3)
        self.ssl_temperature, self.ssl_scale = options.ssl_temperature, options.ssl_scale
        ssl_crops = simclr_crops(2, options.ssl_crop_scale, options.ssl_colour_strength, options.ssl_blur_p)
        self.views = ViewSpec(crops=(options.image_crop(1), ssl_crops), text=text_spec(self.towers))

    def forward(self, batch: dict) -> StepOutput:
        clip_view, view_a, view_b = batch["views"]
        image = self.towers.encode_image(clip_view)
        text = self.towers.encode_text(batch["text"])
        language = clip_loss(image, text, self.towers.logit_scale)
        z_a, z_b = self.projector(self.backbone(torch.cat([view_a, view_b]))).chunk(2)
        self_supervised = nt_xent(z_a, z_b, self.ssl_temperature)
        return StepOutput(loss=language + self.ssl_scale * self_supervised,
                          metrics={"clip_loss": language.detach().item(), "ssl_loss": self_supervised.detach().item(),
                                   "logit_scale": self.towers.logit_scale.detach().exp().item()},
                          embeddings=image.detach())
