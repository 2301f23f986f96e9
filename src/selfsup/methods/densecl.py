"""DenseCL: Wang, Zhang, Shen, Kong, Li, "Dense Contrastive Learning for Self-Supervised Visual Pre-Training",
CVPR 2021 (arXiv:2011.09157).

MoCo v2 (a query encoder, its EMA key encoder, a queue of negatives) with a second, dense head beside the
global one:

1. global: pooled features -> MLP -> query; the key of the other view from the key encoder; InfoNCE against
   a queue of earlier keys (:func:`~selfsup.losses.info_nce`, MoCo v2's form);
2. dense: the feature map (before pooling) -> two 1x1 convolutions -> one query vector per location; each query
   location is matched to a key location of the other view, and its positive is that key vector; the negatives
   are a second queue holding each earlier image's mean dense key (the paper's dense queue);
3. loss = (1 - lambda) * global + lambda * dense (lambda = 0.5, paper section 3.3).

``symmetric=true`` adds the other direction (view b as the query, view a through the key encoder) and averages
the two, as MoCo v3 does; the paper's loss (the default) has one direction.

Matching (``match``): ``feature``, the paper's rule, takes for each query location the key location whose
backbone feature (key encoder) is most similar; ``geometry`` (default here) uses the views' crop boxes and
flips (``batch["boxes"]``, :func:`selfsup.views.geometry.matched_cells`): the key cell nearest to the same
point of the source image, and only query cells inside the part both views show take part. At the short
budgets of a CPU, feature similarity of a barely trained encoder is mostly noise; the geometry is the truth
that the paper's rule approximates.

Distributed: both queues are filled with every rank's keys (:class:`~selfsup.methods.parts.queue.FeatureQueue`),
so the negatives are the same on every rank; the losses are means over this rank's queries (with geometry
matching the number of dense queries differs from rank to rank, so DDP's average weighs ranks equally rather
than queries). On the first step, with the queues still empty, this batch's keys are the negatives.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.heads import mlp
from selfsup.losses import info_nce
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import SameViewsOptions, Scale
from selfsup.backbones.feature_maps import feature_map, require_feature_map
from selfsup.methods.parts.dense import conv_projector, require_boxes
from selfsup.methods.parts.ema import ema_update, frozen_copy
from selfsup.methods.parts.queue import FeatureQueue
from selfsup.views.geometry import matched_cells


class DenseCLOptions(SameViewsOptions):
    crop_scale: Scale = (0.3, 1.0)  # two 32 px crops then usually overlap (the paper: MoCo v2's 0.2)
    temperature: float = Field(0.2, gt=0)
    queue_size: int = Field(65536, ge=1)
    momentum: float = Field(0.999, ge=0, le=1)
    projector_hidden_dim: int = Field(2048, ge=1)
    projector_out_dim: int = Field(128, ge=1)
    dense_weight: float = Field(0.5, ge=0, le=1)  # lambda
    match: Literal["geometry", "feature"] = "geometry"
    symmetric: bool = False  # both views as queries (as MoCo v3 does); the paper's loss is asymmetric


@METHODS.register("densecl")
class DenseCL(Method):
    Options = DenseCLOptions
    test_options = {"projector_hidden_dim": 32, "projector_out_dim": 16, "queue_size": 64, "momentum": 0.99}

    def __init__(self, backbone: nn.Module, options: DenseCLOptions):
        super().__init__()
        require_feature_map(backbone, "DenseCL")
        self.options = options
        self.backbone = backbone
        width, hidden, dim = backbone.num_features, options.projector_hidden_dim, options.projector_out_dim
        self.projector = mlp(width, hidden, dim, batch_norm=False)  # MoCo v2's fc-ReLU-fc
        self.dense_projector = conv_projector(width, hidden, dim, batch_norm=False)
        self.key_backbone = frozen_copy(backbone)
        self.key_projector = frozen_copy(self.projector)
        self.key_dense_projector = frozen_copy(self.dense_projector)
        self.queue = FeatureQueue(options.queue_size, dim)
        self.dense_queue = FeatureQueue(options.queue_size, dim)
        self.views = dataclasses.replace(options.same_views(2), boxes=options.match == "geometry")

    def after_optimizer_step(self, progress: float) -> None:
        for key, query in ((self.key_backbone, self.backbone), (self.key_projector, self.projector),
                           (self.key_dense_projector, self.dense_projector)):
            ema_update(key, query, self.options.momentum)

    def _matches(self, boxes: torch.Tensor | None, query_map: torch.Tensor,
                 key_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(index of the matched key cell (B, N), which query cells take part (B, N)); ``boxes`` (B, 2, ...) holds
        the query view's geometry first."""
        grid = tuple(query_map.shape[-2:])
        if self.options.match == "geometry":
            return matched_cells(boxes[:, 0], boxes[:, 1], grid, tuple(key_map.shape[-2:]))
        similarity = torch.einsum("bdi,bdj->bij", F.normalize(query_map.flatten(2), dim=1),
                                  F.normalize(key_map.flatten(2), dim=1))
        index = similarity.argmax(dim=-1)
        return index, torch.ones_like(index, dtype=torch.bool)

    def _direction(self, query_view: torch.Tensor, key_view: torch.Tensor, boxes: torch.Tensor | None,
                   negatives: torch.Tensor, dense_negatives: torch.Tensor) -> dict:
        """Both losses with ``query_view`` as the query and ``key_view`` through the key encoder."""
        fmap = feature_map(self.backbone, query_view)
        query = self.projector(fmap.mean(dim=(2, 3)))
        dense_query = self.dense_projector(fmap).flatten(2)  # (B, D, N)
        with torch.no_grad():
            key_fmap = feature_map(self.key_backbone, key_view)
            key = self.key_projector(key_fmap.mean(dim=(2, 3)))
            dense_key = self.key_dense_projector(key_fmap).flatten(2)  # (B, D, Nk)
            index, valid = self._matches(boxes, fmap.detach(), key_fmap)
            positives = torch.gather(dense_key, 2, index[:, None].expand(-1, dense_key.shape[1], -1))  # (B, D, N)
            image_keys = F.normalize(dense_key.mean(dim=2), dim=1)
        if not len(negatives):  # the first step: nothing queued yet
            negatives, dense_negatives = F.normalize(key, dim=1), image_keys
        t = self.options.temperature
        global_loss = info_nce(query, key, negatives=negatives, temperature=t)
        queries = dense_query.transpose(1, 2)[valid]  # (M, D): the query cells that have a match
        if len(queries):
            dense_loss = info_nce(queries, positives.transpose(1, 2)[valid], negatives=dense_negatives, temperature=t)
        else:  # no two views of this batch overlap: no dense term (keeps the graph for every parameter)
            dense_loss = dense_query.sum() * 0
        return {"global": global_loss, "dense": dense_loss, "key": F.normalize(key, dim=1), "image_keys": image_keys,
                "matched": valid.float().mean(), "query": query}

    def forward(self, batch: dict) -> StepOutput:
        view_a, view_b = batch["views"]
        boxes = require_boxes(batch, "DenseCL with match=geometry") if self.options.match == "geometry" else None
        negatives, dense_negatives = self.queue.get().clone(), self.dense_queue.get().clone()
        terms = [self._direction(view_a, view_b, boxes, negatives, dense_negatives)]
        if self.options.symmetric:
            swapped = boxes.flip(1) if boxes is not None else None
            terms.append(self._direction(view_b, view_a, swapped, negatives, dense_negatives))
        global_loss = sum(t["global"] for t in terms) / len(terms)
        dense_loss = sum(t["dense"] for t in terms) / len(terms)
        w = self.options.dense_weight
        loss = (1 - w) * global_loss + w * dense_loss
        if self.training:
            self.queue.enqueue(torch.cat([t["key"] for t in terms]))
            self.dense_queue.enqueue(torch.cat([t["image_keys"] for t in terms]))
        matched = sum(t["matched"] for t in terms) / len(terms)
        return StepOutput(loss=loss, metrics={"global_loss": float(global_loss.detach()), "dense_loss": float(dense_loss.detach()),
                                              "matched_cells": float(matched)},
                          embeddings=terms[0]["query"].detach())
