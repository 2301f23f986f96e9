"""SigLIP: Zhai, Mustafa, Kolesnikov, Beyer, "Sigmoid Loss for Language Image Pre-Training", ICCV 2023
(arXiv:2303.15343).

CLIP's two towers with the softmax over the batch replaced by an independent binary decision per image-text
pair: -log sigmoid(z (t x.y + b)), z = +1 for a matching pair and -1 otherwise, with a learnt temperature t and
bias b (initialised to log 10 and -10, so that the many negatives do not dominate the first steps). No
normalisation over the batch is needed, so the distributed form exchanges chunks of texts between ranks
instead of gathering a global logit matrix (:func:`selfsup.losses.siglip_loss`).
"""
from __future__ import annotations

import torch.nn as nn
from pydantic import Field

from selfsup.losses import siglip_loss
from selfsup.methods.base import METHODS, StepOutput
from selfsup.methods.parts.image_text import TEST_TEXT_OPTIONS, ImageTextMethod, ImageTextOptions, text_spec
from selfsup.views import ViewSpec


class SigLIPOptions(ImageTextOptions):
    temperature: float = Field(0.1, gt=0)  # initial 1 / t' with t' = log 10 (the paper's init: t = 10)
    logit_bias: float = -10.0  # initial b (the paper's init)


@METHODS.register("siglip")
class SigLIP(ImageTextMethod):
    Options = SigLIPOptions
    test_options = TEST_TEXT_OPTIONS

    def __init__(self, backbone: nn.Module, options: SigLIPOptions):
        super().__init__()
        self.towers = options.build_towers(backbone, temperature=options.temperature,
                                           logit_bias=options.logit_bias)
        self.views = ViewSpec(crops=(options.image_crop(1),), text=text_spec(self.towers))

    def forward(self, batch: dict) -> StepOutput:
        image, text = self.towers(batch["views"][0], batch["text"])
        loss = siglip_loss(image, text, self.towers.logit_scale, self.towers.logit_bias)
        metrics = {"logit_scale": self.towers.logit_scale.detach().exp().item(),
                   "logit_bias": self.towers.logit_bias.detach().item()}
        return StepOutput(loss=loss, metrics=metrics, embeddings=image.detach())
