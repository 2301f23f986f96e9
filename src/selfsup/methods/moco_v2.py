"""MoCo v2: He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020 (arXiv:1911.05722), with the v2 improvements of Chen, Fan, Girshick, He, "Improved Baselines with
Momentum Contrastive Learning" (arXiv:2003.04297): MLP projector, blur, cosine schedule, temperature 0.2.

A query encoder (backbone + projector) and a key encoder that is its exponential moving average. The
positive of a query is the key of the other view of the same image; the negatives are a queue of keys from
earlier batches, so their number is independent of the batch size. Optional MoCHi hard-negative mixing
(Kalantidis et al., "Hard Negative Mixing for Contrastive Learning", NeurIPS 2020) synthesises extra
negatives per query from the hardest queue entries.

Under DDP the queue receives the keys of every rank (all-gathered before enqueueing), so every rank holds
the same queue. MoCo's shuffle-BN is not implemented; BN statistics are per rank.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.methods.parts.ema import ema_update, frozen_copy
from selfsup.schedules import cosine_momentum
from selfsup.methods.parts.queue import FeatureQueue
from selfsup.heads import mlp
from selfsup.losses import info_nce, mochi_negatives
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.methods.common import SameViewsOptions, Scale


class MoCHiOptions(MethodOptions):
    num_hard: int = Field(1024, ge=2)  # N: how many of the hardest queue entries to mix from
    num_mix_pairs: int = Field(1024, ge=0)  # s: mixes of two hard negatives
    num_mix_query: int = Field(256, ge=0)  # s': mixes of the query with a hard negative


class MoCoV2Options(SameViewsOptions):
    temperature: float = Field(0.2, gt=0)
    queue_size: int = Field(65536, ge=1)
    momentum: float = Field(0.999, ge=0, le=1)
    momentum_schedule: bool = False  # cosine from `momentum` to 1 (BYOL-style) instead of a constant
    symmetric: bool = False  # both views as queries (as in MoCo v3); the paper's v2 loss is asymmetric
    projector_hidden_dim: int = Field(2048, ge=1)
    projector_out_dim: int = Field(128, ge=1)
    crop_scale: Scale = (0.2, 1.0)
    mochi: MoCHiOptions | None = None


@METHODS.register("moco_v2")
class MoCoV2(Method):
    Options = MoCoV2Options
    test_options = {"projector_hidden_dim": 32, "projector_out_dim": 16, "queue_size": 64,
                    "mochi": {"num_hard": 16, "num_mix_pairs": 8, "num_mix_query": 4}}

    def __init__(self, backbone: nn.Module, options: MoCoV2Options):
        super().__init__()
        self.options = options
        self.backbone = backbone
        # MoCo v2's projector: fc-ReLU-fc, no BatchNorm.
        self.projector = mlp(backbone.num_features, options.projector_hidden_dim, options.projector_out_dim,
                             batch_norm=False)
        self.key_backbone = frozen_copy(backbone)
        self.key_projector = frozen_copy(self.projector)
        self.queue = FeatureQueue(options.queue_size, options.projector_out_dim)
        self.momentum = options.momentum
        self.views = options.same_views(2)

    def on_step(self, progress: float) -> None:
        if self.options.momentum_schedule:
            self.momentum = cosine_momentum(progress, self.options.momentum)

    def after_optimizer_step(self, progress: float) -> None:
        ema_update(self.key_backbone, self.backbone, self.momentum)
        ema_update(self.key_projector, self.projector, self.momentum)

    def _contrast(self, query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        if not len(negatives):  # the very first step: no queue yet, so the batch's other keys are the negatives
            return info_nce(query, key, temperature=self.options.temperature)
        extra = None
        if self.options.mochi is not None:
            m = self.options.mochi
            extra = mochi_negatives(query.detach(), negatives, num_hard=m.num_hard, num_mix_pairs=m.num_mix_pairs,
                                    num_mix_query=m.num_mix_query)
        return info_nce(query, key, negatives=negatives, temperature=self.options.temperature, extra_negatives=extra)

    def forward(self, batch: dict) -> StepOutput:
        view_a, view_b = batch["views"]
        query_a = self.projector(self.backbone(view_a))
        with torch.no_grad():
            key_b = self.key_projector(self.key_backbone(view_b))
        negatives = self.queue.get().clone()  # the enqueue below must not alter the graph
        loss = self._contrast(query_a, key_b, negatives)
        keys = [key_b]
        if self.options.symmetric:
            query_b = self.projector(self.backbone(view_b))
            with torch.no_grad():
                key_a = self.key_projector(self.key_backbone(view_a))
            loss = (loss + self._contrast(query_b, key_a, negatives)) / 2
            keys.append(key_a)
        if self.training:
            self.queue.enqueue(F.normalize(torch.cat(keys), dim=1))
        return StepOutput(loss=loss, metrics={"momentum": self.momentum}, embeddings=query_a.detach())
