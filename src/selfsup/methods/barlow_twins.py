"""Barlow Twins: Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021 (arXiv:2103.03230).

Both views go through backbone + a wide 3-layer projector; the cross-correlation matrix of the two
batch-standardised projections is pushed to the identity: invariance on the diagonal, redundancy reduction
off it (weight lambda). Optionally the mixed-sample regulariser of Bandara et al., "Guarding Barlow Twins
Against Overfitting with Mixed Samples" (arXiv:2312.02151): embed a mixup of view A with a shuffled view B
and ask its cross-correlations with both views to be the matching interpolations of the unmixed ones.

The batch statistics and the cross-correlation are over the global batch (all-gathered with autograd in
the loss), so the loss does not depend on how the batch is split across ranks.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.dist import broadcast_from_main
from selfsup.heads import mlp
from selfsup.losses import barlow_twins, mixed_barlow_regularizer
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import AsymmetricViewsOptions


class BarlowTwinsOptions(AsymmetricViewsOptions):
    lambd: float = Field(0.0051, ge=0)  # weight of the off-diagonal (redundancy) term
    projector_dim: int = Field(8192, ge=1)  # hidden and output width
    mixed_weight: float = Field(0.0, ge=0)  # weight of the mixed-sample regulariser; 0 turns it off
    mix_alpha: float = Field(1.0, gt=0)  # mixup coefficient ~ Beta(alpha, alpha)


@METHODS.register("barlow_twins")
class BarlowTwins(Method):
    Options = BarlowTwinsOptions
    test_options = {"projector_dim": 32, "mixed_weight": 1.0}

    def __init__(self, backbone: nn.Module, options: BarlowTwinsOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        dim = options.projector_dim
        self.projector = mlp(backbone.num_features, dim, dim, num_layers=3)
        self.views = options.asymmetric_views()

    def forward(self, batch: dict) -> StepOutput:
        view_a, view_b = batch["views"]
        z_a, z_b = self.projector(self.backbone(torch.cat([view_a, view_b]))).chunk(2)
        loss = barlow_twins(z_a, z_b, lambd=self.options.lambd)
        metrics = {}
        if self.options.mixed_weight > 0:
            # The paper's mixup: view A with a shuffled view B. The global RNG (part of every checkpoint) keeps
            # resumes exact; the coefficient must be the same on every rank, so rank 0's is broadcast.
            mix = torch.distributions.Beta(self.options.mix_alpha, self.options.mix_alpha).sample().to(view_a.device)
            mix = float(broadcast_from_main(mix))
            permutation = torch.randperm(view_a.shape[0], device=view_a.device)
            z_mixed = self.projector(self.backbone(mix * view_a + (1 - mix) * view_b[permutation]))
            regularizer = mixed_barlow_regularizer(z_a, z_b, z_mixed, permutation, mix)
            loss = loss + self.options.mixed_weight * regularizer
            metrics["mixed_regularizer"] = float(regularizer.detach())
        return StepOutput(loss=loss, metrics=metrics, embeddings=z_a.detach())
