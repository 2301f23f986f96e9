"""CLIP: Radford, Kim, Hallacy, Ramesh, Goh, Agarwal, Sastry, Askell, Mishkin, Clark, Krueger, Sutskever,
"Learning Transferable Visual Models From Natural Language Supervision", ICML 2021 (arXiv:2103.00020).

An image tower (the run's backbone) and a text tower map a picture and its caption into one space; a
symmetric InfoNCE over the global batch pulls each image to its own caption and away from every other caption
(and vice versa), with a learnable temperature (the logit scale, clamped at 100). The image tower's pooled
features are exported and evaluated like any backbone's; the towers together give zero-shot classification
and image-text retrieval (:mod:`selfsup.eval.protocols.zero_shot`).
"""
from __future__ import annotations

import torch.nn as nn
from pydantic import Field

from selfsup.losses import clip_loss
from selfsup.methods.base import METHODS, StepOutput
from selfsup.methods.parts.image_text import TEST_TEXT_OPTIONS, ImageTextMethod, ImageTextOptions, text_spec
from selfsup.views import ViewSpec


class CLIPOptions(ImageTextOptions):
    temperature: float = Field(0.07, gt=0)  # initial; learnt (the paper's init)
    # open_clip's --local-loss: each rank's images against every text and its texts against every image, instead
    # of every rank computing the whole global logit matrix (same gradients, less compute per rank)
    local_loss: bool = False


@METHODS.register("clip")
class CLIP(ImageTextMethod):
    Options = CLIPOptions
    test_options = TEST_TEXT_OPTIONS

    def __init__(self, backbone: nn.Module, options: CLIPOptions):
        super().__init__()
        self.towers = options.build_towers(backbone, temperature=options.temperature)
        self.local_loss = options.local_loss
        self.views = ViewSpec(crops=(options.image_crop(1),), text=text_spec(self.towers))

    def forward(self, batch: dict) -> StepOutput:
        image, text = self.towers(batch["views"][0], batch["text"])
        loss = clip_loss(image, text, self.towers.logit_scale, local_loss=self.local_loss)
        return StepOutput(loss=loss, metrics={"logit_scale": self.towers.logit_scale.detach().exp().item()},
                          embeddings=image.detach())
