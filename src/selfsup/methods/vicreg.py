"""VICReg: Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022 (arXiv:2105.04906).

Both views go through backbone + a wide 3-layer expander. The loss has three terms: invariance (mean
squared distance between the two embeddings), variance (a hinge keeping each dimension's std above gamma)
and covariance (off-diagonal covariance pushed to zero), weighted 25 / 25 / 1 in the paper.

Variance and covariance are computed over the global batch (all-gathered with autograd in the loss); the
invariance term is a per-sample mean that DDP's averaging makes global.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.heads import mlp
from selfsup.losses import vicreg
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import AsymmetricViewsOptions


class VICRegOptions(AsymmetricViewsOptions):
    sim_weight: float = Field(25.0, ge=0)
    var_weight: float = Field(25.0, ge=0)
    cov_weight: float = Field(1.0, ge=0)
    expander_dim: int = Field(8192, ge=1)  # hidden and output width


@METHODS.register("vicreg")
class VICReg(Method):
    Options = VICRegOptions
    test_options = {"expander_dim": 32}

    def __init__(self, backbone: nn.Module, options: VICRegOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        dim = options.expander_dim
        self.expander = mlp(backbone.num_features, dim, dim, num_layers=3)
        self.views = options.asymmetric_views()

    def forward(self, batch: dict) -> StepOutput:
        z_a, z_b = self.expander(self.backbone(torch.cat(batch["views"]))).chunk(2)
        o = self.options
        loss, terms = vicreg(z_a, z_b, sim_weight=o.sim_weight, var_weight=o.var_weight, cov_weight=o.cov_weight)
        return StepOutput(loss=loss, metrics=terms, embeddings=z_a.detach())
