"""MoCo v3: Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021
(arXiv:2104.02057).

No queue: the negatives of a query are the momentum keys of the other images in the (global) batch. The
query encoder is backbone + projector + predictor, the key encoder an EMA of backbone + projector whose
momentum rises from 0.99 to 1 on a cosine. The loss is symmetric, ctr(q1, k2) + ctr(q2, k1), each scaled by
2 tau as in the paper. Works with ResNets and ViTs (for ViTs the paper freezes the patch projection; use a
recipe to do so).

Under DDP the keys are all-gathered (they carry no gradient) so every query sees the global batch.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.methods.parts.ema import ema_update, frozen_copy
from selfsup.schedules import cosine_momentum
from selfsup.heads import mlp
from selfsup.losses import info_nce
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import Probability, SameViewsOptions, simclr_crops
from selfsup.views import ViewSpec


class MoCoV3Options(SameViewsOptions):
    temperature: float = Field(0.2, gt=0)  # 0.2 for ViT, 1.0 for ResNet-50 in the paper
    momentum: float = Field(0.99, ge=0, le=1)  # start of the cosine schedule to 1
    projector_hidden_dim: int = Field(4096, ge=1)
    projector_out_dim: int = Field(256, ge=1)
    predictor_hidden_dim: int = Field(4096, ge=1)
    solarize_p: Probability = 0.1


@METHODS.register("moco_v3")
class MoCoV3(Method):
    Options = MoCoV3Options
    test_options = {"projector_hidden_dim": 32, "projector_out_dim": 16, "predictor_hidden_dim": 32}

    def __init__(self, backbone: nn.Module, options: MoCoV3Options):
        super().__init__()
        self.options = options
        self.backbone = backbone
        dim = options.projector_out_dim
        # Projector 3 layers with BN (last BN without affine), predictor 2 layers (paper, section 4).
        self.projector = mlp(backbone.num_features, options.projector_hidden_dim, dim, num_layers=3,
                             last_batch_norm=True)
        self.predictor = mlp(dim, options.predictor_hidden_dim, dim, num_layers=2, last_batch_norm=True)
        self.key_backbone = frozen_copy(backbone)
        self.key_projector = frozen_copy(self.projector)
        self.momentum = options.momentum
        self.views = ViewSpec(crops=(simclr_crops(2, options.crop_scale, options.colour_strength, options.blur_p,
                                                  solarize_p=options.solarize_p),))

    def on_step(self, progress: float) -> None:
        self.momentum = cosine_momentum(progress, self.options.momentum)

    def after_optimizer_step(self, progress: float) -> None:
        ema_update(self.key_backbone, self.backbone, self.momentum)
        ema_update(self.key_projector, self.projector, self.momentum)

    def forward(self, batch: dict) -> StepOutput:
        views = torch.cat(batch["views"])
        queries = self.predictor(self.projector(self.backbone(views)))
        with torch.no_grad():
            keys = self.key_projector(self.key_backbone(views))
        q_a, q_b = queries.chunk(2)
        k_a, k_b = keys.chunk(2)
        tau = self.options.temperature
        loss = 2 * tau * (info_nce(q_a, k_b, temperature=tau) + info_nce(q_b, k_a, temperature=tau))
        return StepOutput(loss=loss, metrics={"momentum": self.momentum}, embeddings=q_a.detach())
