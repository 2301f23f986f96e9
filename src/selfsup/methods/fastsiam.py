"""FastSiam: Pototzky, Sultan, Schmidt-Thieme, "FastSiam: Resource-Efficient Self-supervised Learning on a
Single GPU", GCPR 2022 (DAGM German Conference on Pattern Recognition, LNCS 13485).

SimSiam (Chen and He, CVPR 2021) with more than two views: each of K views (4 in the paper) is predicted, and
its target is the mean of the other K - 1 views' projections under a stop-gradient. Averaging several
targets gives a steadier training signal per image, so FastSiam reaches SimSiam's accuracy in far fewer
epochs (lightly's CIFAR-10 benchmark: the best kNN of its table at 200 epochs, 0.906).

Loss: (1/K) sum_i D(p_i, sg(mean_{j != i} z_j)) with D the negative cosine. A per-sample mean loss (DDP
averaging makes it global); the projector ends in BatchNorm, so the method asks for SyncBatchNorm under DDP.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.heads import mlp
from selfsup.losses import negative_cosine
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import SameViewsOptions, Scale


class FastSiamOptions(SameViewsOptions):
    num_views: int = Field(4, ge=3)  # K: the paper's 4 (1 predicted, 3 averaged as its target, in turn)
    projector_dim: int = Field(2048, ge=1)  # hidden and output width of the projector, as SimSiam
    predictor_hidden_dim: int = Field(512, ge=1)  # the bottleneck
    crop_scale: Scale = (0.2, 1.0)


@METHODS.register("fastsiam")
class FastSiam(Method):
    Options = FastSiamOptions
    test_options = {"projector_dim": 32, "predictor_hidden_dim": 8, "num_views": 3}
    sync_batchnorm = True

    def __init__(self, backbone: nn.Module, options: FastSiamOptions):
        super().__init__()
        self.backbone = backbone
        dim = options.projector_dim
        self.projector = mlp(backbone.num_features, dim, dim, num_layers=3, last_batch_norm=True)
        self.predictor = mlp(dim, options.predictor_hidden_dim, dim, num_layers=2)
        self.views = options.same_views(options.num_views)

    def forward(self, batch: dict) -> StepOutput:
        views = batch["views"]
        k = len(views)
        projections = self.projector(self.backbone(torch.cat(views)))  # one backbone call: BN sees every view
        predictions = self.predictor(projections).chunk(k)
        z = projections.view(k, -1, projections.shape[-1])
        total = z.sum(0)
        # The mean of the other views' projections: (sum - own) / (k - 1); negative_cosine detaches its target.
        loss = sum(negative_cosine(p, (total - z[i]) / (k - 1)) for i, p in enumerate(predictions)) / k
        return StepOutput(loss=loss, embeddings=z[0].detach())
