"""Supervised contrastive learning (SupCon): Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020
(arXiv:2004.11362). The labelled reference point for the self-supervised methods, not one of them.

SimCLR's architecture and views, but every view of every image with the same label is a positive
(L^sup_out, the paper's eq. 2). Needs labels (class sub-folders, npz labels or an embedded dataset).
Under DDP the embeddings and labels are all-gathered (embeddings with autograd) inside the loss.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.heads import mlp
from selfsup.losses import supcon
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import Probability, SameViewsOptions


class SupConOptions(SameViewsOptions):
    temperature: float = Field(0.1, gt=0)
    projector_hidden_dim: int = Field(2048, ge=1)
    projector_out_dim: int = Field(128, ge=1)
    blur_p: Probability = 0.0


@METHODS.register("supcon")
class SupCon(Method):
    Options = SupConOptions
    test_options = {"projector_hidden_dim": 32, "projector_out_dim": 16}
    needs_labels = True

    def __init__(self, backbone: nn.Module, options: SupConOptions):
        super().__init__()
        self.backbone = backbone
        self.temperature = options.temperature
        self.projector = mlp(backbone.num_features, options.projector_hidden_dim, options.projector_out_dim)
        self.views = options.same_views(2)

    def forward(self, batch: dict) -> StepOutput:
        labels = batch["label"]
        if (labels < 0).any():
            raise ValueError("supcon needs a label for every training image (class sub-folders or npz labels)")
        z_a, z_b = self.projector(self.backbone(torch.cat(batch["views"]))).chunk(2)
        loss = supcon(torch.stack([z_a, z_b], dim=1), labels, temperature=self.temperature)
        return StepOutput(loss=loss, embeddings=z_a.detach())
