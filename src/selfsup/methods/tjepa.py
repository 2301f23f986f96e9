"""T-JEPA: Thimonier, Popineau, Rimmel, Doan, "T-JEPA: Augmentation-Free Self-Supervised Learning for Tabular
Data", 2024 (arXiv:2410.05016).

I-JEPA's latent prediction carried to table rows, where "patches" are features:

1. masks (drawn per sample in the data workers, :class:`~selfsup.views.table.FeatureSubsets`): M target
   subsets of the row's features and a context subset disjoint from them;
2. targets: the EMA target encoder sees the whole row; its feature tokens, layer-normalised (and, with
   ``standardise_targets``, standardised over the batch per column and channel), are gathered at each target
   subset (no gradient); ``target_spread`` logs the share of their energy that differs between rows;
3. context: the context encoder (the backbone being trained, a feature-token transformer,
   :mod:`selfsup.backbones.table_transformer`) sees only the context features (token dropping);
4. a narrow transformer predictor (:class:`~selfsup.heads.JEPAPredictor` on the 1 x F grid of features: the
   mask tokens carry each target feature's position) predicts the target tokens from the context tokens;
5. the loss is the distance in latent space (smooth L1, or L2), averaged over every target feature;
6. the target encoder follows by EMA, the momentum rising linearly to 1.

Regularisation tokens: the paper adds learned tokens to every sequence, which it found necessary to keep the
representations from collapsing; here they are the encoder's register tokens (``backbone.options.
num_registers``, 2 in the ``tjepa`` recipe), so they travel with the exported encoder. No augmentation: the
views are the rows themselves ("augmentation-free").
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.backbones.vit import gather_tokens
from selfsup.heads.jepa_predictor import JEPAPredictor
from selfsup.losses.predictive import latent_prediction_loss, standardise_over_batch
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.methods.parts.ema import ema_update, frozen_copy
from selfsup.schedules import linear_ramp
from selfsup.views import MaskSpec, ViewSpec
from selfsup.views.table import FeatureSubsets, TableViewSpec


class TJEPAOptions(MethodOptions):
    predictor_dim: int = Field(64, ge=4)
    predictor_depth: int = Field(2, ge=1)
    predictor_heads: int = Field(4, ge=1)
    num_targets: int = Field(2, ge=1)
    target_ratio: float = Field(0.25, gt=0, lt=1)  # features per target subset
    context_ratio: float = Field(0.5, gt=0, lt=1)  # context features (disjoint from the targets)
    loss: Literal["smooth_l1", "l2"] = "smooth_l1"
    momentum: float = Field(0.996, ge=0, le=1)
    final_momentum: float = Field(1.0, ge=0, le=1)
    # standardise each target token over the batch (per feature and channel): see standardise_over_batch
    standardise_targets: bool = False


def check_token_encoder(backbone: nn.Module, kind: str, method: str) -> None:
    """A method of a non-image kind needs that kind's token encoder (``forward_tokens``, ``field_kind``)."""
    if getattr(backbone, "field_kind", "image") != kind or not hasattr(backbone, "forward_tokens"):
        raise ValueError(f"{method} needs a {kind} encoder with token access (backbone.name: a registered "
                         f"{kind} backbone, see `selfsup list`), not {type(backbone).__name__}")


@METHODS.register("tjepa")
class TJEPA(Method):
    Options = TJEPAOptions
    field_kind = "table"
    test_options = {"predictor_dim": 16, "predictor_depth": 1, "predictor_heads": 2}

    def __init__(self, backbone: nn.Module, options: TJEPAOptions):
        super().__init__()
        check_token_encoder(backbone, "table", "tjepa")
        self.options = options
        self.backbone = backbone  # the context encoder
        self.target_backbone = frozen_copy(backbone)
        self.predictor = JEPAPredictor(backbone.embed_dim, options.predictor_dim, options.predictor_depth,
                                       options.predictor_heads)
        self.momentum = options.momentum
        masks = FeatureSubsets(options.num_targets, options.target_ratio, options.context_ratio)
        masks.counts(backbone.num_tokens)  # too few features for these subsets: fail at start
        self.views = ViewSpec(crops=(TableViewSpec(count=1, size=backbone.num_tokens),),
                              masks=MaskSpec(masks, patch_size=1, views=0, dims=1))

    def on_step(self, progress: float) -> None:
        self.momentum = linear_ramp(progress, self.options.momentum, self.options.final_momentum)

    def after_optimizer_step(self, progress: float) -> None:
        ema_update(self.target_backbone, self.backbone, self.momentum)

    def forward(self, batch: dict) -> StepOutput:
        rows = batch["views"][0]
        context_indices, target_indices = batch["masks"]["context"], batch["masks"]["targets"]
        b, m, k_t = target_indices.shape
        with torch.no_grad():
            tokens = self.target_backbone.forward_tokens(rows)["patches"]
            tokens = F.layer_norm(tokens.float(), tokens.shape[-1:])
            # the share of a target token's (unit) energy that differs between rows: near 0, the targets are
            # the columns' constants and the features no longer tell rows apart
            spread = tokens.var(dim=0).mean()
            if self.options.standardise_targets:
                tokens = standardise_over_batch(tokens)
            targets = gather_tokens(tokens, target_indices.reshape(b, m * k_t)).reshape(b, m, k_t, -1)
        context = self.backbone.forward_tokens(rows, keep_indices=context_indices)["patches"]
        predictions = self.predictor(context, context_indices, target_indices, (1, self.backbone.num_tokens))
        loss = latent_prediction_loss(predictions, targets, kind=self.options.loss)
        return StepOutput(loss=loss, metrics={"ema_momentum": self.momentum, "target_spread": float(spread)},
                          embeddings=context.mean(dim=1).detach())
