"""NNCLR: Dwibedi, Aytar, Tompson, Sermanet, Zisserman, "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations", ICCV 2021 (arXiv:2104.14548).

Like SimCLR, but the positive of a view is the nearest neighbour of its projection in a support set (a
queue of projections from earlier batches) rather than the projection itself, which brings semantic
variation beyond what augmentations give. A predictor on the other branch; the loss is symmetric InfoNCE
with the other images' predictions as negatives.

Under DDP the predictions (keys) are all-gathered with autograd for the negatives, and the support set
receives every rank's projections, so every rank holds the same support set.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.methods.parts.queue import FeatureQueue
from selfsup.heads import mlp
from selfsup.losses import info_nce
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import AsymmetricViewsOptions


class NNCLROptions(AsymmetricViewsOptions):
    temperature: float = Field(0.1, gt=0)
    support_set_size: int = Field(98304, ge=1)
    projector_hidden_dim: int = Field(2048, ge=1)
    projector_out_dim: int = Field(256, ge=1)
    predictor_hidden_dim: int = Field(4096, ge=1)


@METHODS.register("nnclr")
class NNCLR(Method):
    Options = NNCLROptions
    test_options = {"support_set_size": 64, "projector_hidden_dim": 32, "projector_out_dim": 16,
                    "predictor_hidden_dim": 32}

    def __init__(self, backbone: nn.Module, options: NNCLROptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        dim = options.projector_out_dim
        self.projector = mlp(backbone.num_features, options.projector_hidden_dim, dim, num_layers=3,
                             last_batch_norm=True)
        self.predictor = mlp(dim, options.predictor_hidden_dim, dim)
        self.support_set = FeatureQueue(options.support_set_size, dim)
        self.views = options.asymmetric_views()

    def forward(self, batch: dict) -> StepOutput:
        projections = self.projector(self.backbone(torch.cat(batch["views"])))
        predictions = self.predictor(projections)
        z_a, z_b = projections.chunk(2)
        p_a, p_b = predictions.chunk(2)
        # The nearest neighbours carry no gradient (paper, eq. 2: NN(z) is a support-set entry).
        nn_a = self.support_set.nearest(z_a.detach())
        nn_b = self.support_set.nearest(z_b.detach())
        tau = self.options.temperature
        loss = (info_nce(nn_a, p_b, temperature=tau) + info_nce(nn_b, p_a, temperature=tau)) / 2
        if self.training:
            self.support_set.enqueue(F.normalize(z_a.detach(), dim=1))
        return StepOutput(loss=loss, embeddings=z_a.detach())
