"""SimCLR: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020 (arXiv:2002.05709).

Two augmented views of each image go through the backbone f(.) and a projection MLP g(.); the NT-Xent loss
pulls the two views of an image together and pushes them away from every other view in the (global) batch.
The backbone's pooled features h = f(x), not the projections, are what is evaluated and exported.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.heads import mlp
from selfsup.losses import nt_xent
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.views import CropSpec, ViewSpec


class SimCLROptions(MethodOptions):
    temperature: float = Field(0.5, gt=0)  # 0.5 for CIFAR-scale batches (paper, appendix B.9)
    projector_hidden_dim: int = Field(2048, ge=1)
    projector_out_dim: int = Field(128, ge=1)
    projector_layers: int = Field(2, ge=1)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    colour_strength: float = Field(0.5, ge=0)  # s in the paper: jitter 0.8s brightness/contrast/saturation, 0.2s hue
    blur_p: float = Field(0.0, ge=0, le=1)  # the paper blurs on ImageNet (0.5), not on CIFAR
    grayscale_p: float = Field(0.2, ge=0, le=1)


@METHODS.register("simclr")
class SimCLR(Method):
    Options = SimCLROptions

    def __init__(self, backbone: nn.Module, options: SimCLROptions):
        super().__init__()
        self.backbone = backbone
        self.projector = mlp(backbone.num_features, options.projector_hidden_dim, options.projector_out_dim,
                             options.projector_layers)
        self.temperature = options.temperature
        s = options.colour_strength
        self.views = ViewSpec(crops=(CropSpec(count=2, scale=tuple(options.crop_scale), brightness=0.8 * s,
                                              contrast=0.8 * s, saturation=0.8 * s, hue=0.2 * s,
                                              blur_p=options.blur_p, grayscale_p=options.grayscale_p),))

    def forward(self, batch: dict) -> StepOutput:
        view_a, view_b = batch["views"]
        features = self.backbone(torch.cat([view_a, view_b]))
        z_a, z_b = self.projector(features).chunk(2)
        loss = nt_xent(z_a, z_b, self.temperature)
        return StepOutput(loss=loss, embeddings=z_a.detach())
