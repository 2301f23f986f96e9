"""BYOL: Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS 2020
(arXiv:2006.07733).

An online network (backbone, projector, predictor) predicts the projection that a target network, the
exponential moving average of the online backbone and projector, gives for the other view. No negatives;
the predictor and the slowly moving target prevent collapse. The target momentum rises from 0.996 to 1 on a
cosine. The augmentations are asymmetric: view 1 always blurred, view 2 rarely blurred and sometimes
solarized (paper, table 6).

The loss 2 - 2 cos(p, z') per view pair is a per-sample mean: DDP's gradient averaging makes it global.
BatchNorm in the heads reads batch statistics, so the method asks for SyncBatchNorm under DDP.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.methods.parts.ema import ema_update, frozen_copy
from selfsup.schedules import cosine_momentum
from selfsup.heads import mlp
from selfsup.losses import negative_cosine
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import AsymmetricViewsOptions


class BYOLOptions(AsymmetricViewsOptions):
    momentum: float = Field(0.996, ge=0, le=1)  # start of the cosine schedule to 1
    projector_hidden_dim: int = Field(4096, ge=1)
    projector_out_dim: int = Field(256, ge=1)
    predictor_hidden_dim: int = Field(4096, ge=1)


@METHODS.register("byol")
class BYOL(Method):
    Options = BYOLOptions
    test_options = {"projector_hidden_dim": 32, "projector_out_dim": 16, "predictor_hidden_dim": 32}
    sync_batchnorm = True

    def __init__(self, backbone: nn.Module, options: BYOLOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        dim = options.projector_out_dim
        self.projector = mlp(backbone.num_features, options.projector_hidden_dim, dim)
        self.predictor = mlp(dim, options.predictor_hidden_dim, dim)
        self.target_backbone = frozen_copy(backbone)
        self.target_projector = frozen_copy(self.projector)
        self.momentum = options.momentum
        self.views = options.asymmetric_views()

    def on_step(self, progress: float) -> None:
        self.momentum = cosine_momentum(progress, self.options.momentum)

    def after_optimizer_step(self, progress: float) -> None:
        ema_update(self.target_backbone, self.backbone, self.momentum)
        ema_update(self.target_projector, self.projector, self.momentum)

    def forward(self, batch: dict) -> StepOutput:
        views = torch.cat(batch["views"])
        projections = self.projector(self.backbone(views))
        predictions = self.predictor(projections)
        with torch.no_grad():
            targets = self.target_projector(self.target_backbone(views))
        p_a, p_b = predictions.chunk(2)
        t_a, t_b = targets.chunk(2)
        # 2 - 2 cos, symmetrised over the two views (paper, eq. 2 and the symmetrised loss).
        loss = 2 + (negative_cosine(p_a, t_b) + negative_cosine(p_b, t_a))
        return StepOutput(loss=loss, metrics={"momentum": self.momentum}, embeddings=projections[: len(p_a)].detach())
