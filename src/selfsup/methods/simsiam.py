"""SimSiam: Chen and He, "Exploring Simple Siamese Representation Learning", CVPR 2021 (arXiv:2011.10566).

One network (backbone + 3-layer projector ending in BN) on both views, a bottleneck predictor on one side
and a stop-gradient on the other: D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2 with D the negative cosine. No
negatives, no momentum encoder; the stop-gradient alone prevents collapse (paper, section 4).

A per-sample mean loss (DDP averaging makes it global); BN reads batch statistics, so the method asks for
SyncBatchNorm under DDP.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.heads import mlp
from selfsup.losses import negative_cosine
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import SameViewsOptions, Scale


class SimSiamOptions(SameViewsOptions):
    projector_dim: int = Field(2048, ge=1)  # hidden and output width of the projector
    predictor_hidden_dim: int = Field(512, ge=1)  # the bottleneck (paper: 512 for a 2048-d output)
    crop_scale: Scale = (0.2, 1.0)


@METHODS.register("simsiam")
class SimSiam(Method):
    Options = SimSiamOptions
    test_options = {"projector_dim": 32, "predictor_hidden_dim": 8}
    sync_batchnorm = True

    def __init__(self, backbone: nn.Module, options: SimSiamOptions):
        super().__init__()
        self.backbone = backbone
        dim = options.projector_dim
        self.projector = mlp(backbone.num_features, dim, dim, num_layers=3, last_batch_norm=True)
        self.predictor = mlp(dim, options.predictor_hidden_dim, dim, num_layers=2)
        self.views = options.same_views(2)

    def forward(self, batch: dict) -> StepOutput:
        projections = self.projector(self.backbone(torch.cat(batch["views"])))
        predictions = self.predictor(projections)
        z_a, z_b = projections.chunk(2)
        p_a, p_b = predictions.chunk(2)
        loss = (negative_cosine(p_a, z_b) + negative_cosine(p_b, z_a)) / 2  # negative_cosine detaches its target
        return StepOutput(loss=loss, embeddings=z_a.detach())
