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
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import Probability, SameViewsOptions


class SimCLROptions(SameViewsOptions):
    temperature: float = Field(0.5, gt=0)  # 0.5 for CIFAR-scale batches (paper, appendix B.9)
    projector_hidden_dim: int = Field(2048, ge=1)
    projector_out_dim: int = Field(128, ge=1)
    projector_layers: int = Field(2, ge=1)
    blur_p: Probability = 0.0  # the paper blurs on ImageNet (0.5), not on CIFAR


@METHODS.register("simclr")
class SimCLR(Method):
    Options = SimCLROptions
    test_options = {"projector_hidden_dim": 32, "projector_out_dim": 16}

    def __init__(self, backbone: nn.Module, options: SimCLROptions):
        super().__init__()
        self.backbone = backbone
        self.projector = mlp(backbone.num_features, options.projector_hidden_dim, options.projector_out_dim,
                             options.projector_layers)
        self.temperature = options.temperature
        self.views = options.same_views(2)

    def forward(self, batch: dict) -> StepOutput:
        view_a, view_b = batch["views"]
        features = self.backbone(torch.cat([view_a, view_b]))
        z_a, z_b = self.projector(features).chunk(2)
        loss = nt_xent(z_a, z_b, self.temperature)
        return StepOutput(loss=loss, embeddings=z_a.detach())
