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

``contrast=simclr`` puts the dense term on SimCLR's contrast instead of MoCo v2's: no key encoder and no queues;
both views pass through the one encoder, the global loss is NT-Xent over the batch
(:func:`~selfsup.losses.nt_xent`), and each matched cell's negatives are the other images of the batch, one mean
dense vector each (:func:`~selfsup.losses.dense_info_nce`), in both directions. At the few thousand steps of a
CPU budget SimCLR's in-batch contrast learns much faster than a queue of stale keys (benchmarks/RESULTS.md, the
dense table), so this is the variant that isolates what the dense term adds to a global-only SimCLR.

``symmetric=true`` (with ``contrast=moco``) adds the other direction (view b as the query, view a through the key
encoder) and averages the two, as MoCo v3 does; the paper's loss (the default) has one direction.

Matching (``match``): ``feature``, the paper's rule, takes for each query location the key location whose
backbone feature (key encoder) is most similar; ``geometry`` (default here) uses the views' crop boxes and
flips (``batch["boxes"]``, :func:`selfsup.views.geometry.matched_cells`): the key cell nearest to the same
point of the source image, and only query cells inside the part both views show take part. At the short
budgets of a CPU, feature similarity of a barely trained encoder is mostly noise; the geometry is the truth
that the paper's rule approximates.

Distributed: both queues are filled with every rank's keys (:class:`~selfsup.methods.parts.queue.FeatureQueue`),
so the negatives are the same on every rank; the losses are means over this rank's queries (with geometry
matching the number of dense queries differs from rank to rank, so DDP's average weighs ranks equally rather
than queries). On the first step, with the queues still empty, this batch's keys are the negatives. With
``contrast=simclr`` both losses gather the global batch with autograd (:func:`~selfsup.losses.nt_xent`,
:func:`~selfsup.losses.dense_info_nce`, the latter normalised by the global number of matched cells), so N ranks
give the single-process loss and gradient; the projectors' BatchNorm reads this rank's batch, as SimCLR's does.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from selfsup.heads import mlp
from selfsup.losses import dense_info_nce, info_nce, nt_xent
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
    contrast: Literal["moco", "simclr"] = "moco"  # the paper's MoCo v2, or SimCLR's in-batch contrast

    @model_validator(mode="after")
    def _symmetric_needs_moco(self) -> "DenseCLOptions":
        if self.symmetric and self.contrast == "simclr":
            raise ValueError("method_options.symmetric applies to contrast=moco; contrast=simclr always contrasts "
                             "both directions: drop symmetric=true or set contrast=moco")
        return self


def _swapped(boxes: torch.Tensor | None) -> torch.Tensor | None:
    """The views' geometry with view b first: the other direction's query."""
    return None if boxes is None else boxes.flip(1)


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
        in_batch = options.contrast == "simclr"  # SimCLR's projector has BatchNorm, MoCo v2's fc-ReLU-fc none
        self.projector = mlp(width, hidden, dim, batch_norm=in_batch)
        self.dense_projector = conv_projector(width, hidden, dim, batch_norm=in_batch)
        self.views = dataclasses.replace(options.same_views(2), boxes=options.match == "geometry")
        if in_batch:
            return
        self.key_backbone = frozen_copy(backbone)
        self.key_projector = frozen_copy(self.projector)
        self.key_dense_projector = frozen_copy(self.dense_projector)
        self.queue = FeatureQueue(options.queue_size, dim)
        self.dense_queue = FeatureQueue(options.queue_size, dim)

    def after_optimizer_step(self, progress: float) -> None:
        if self.options.contrast == "simclr":
            return
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

    def _in_batch(self, view_a: torch.Tensor, view_b: torch.Tensor, boxes: torch.Tensor | None) -> StepOutput:
        """``contrast=simclr``: NT-Xent between the views' pooled projections, and the dense contrast of each
        view's matched cells against the other view, with the batch's other images as negatives."""
        fmaps = feature_map(self.backbone, torch.cat([view_a, view_b]))
        z_a, z_b = self.projector(fmaps.mean(dim=(2, 3))).chunk(2)
        global_loss = nt_xent(z_a, z_b, self.options.temperature)
        dense = self.dense_projector(fmaps).flatten(2).chunk(2)  # each (B, D, N)
        maps = fmaps.detach().chunk(2)
        dense_terms, matched = [], []
        for q, k, order in ((0, 1, boxes), (1, 0, _swapped(boxes))):
            index, valid = self._matches(order, maps[q], maps[k])
            positives = torch.gather(dense[k], 2, index[:, None].expand(-1, dense[k].shape[1], -1))
            owners = torch.arange(len(valid), device=valid.device)[:, None].expand_as(valid)[valid]
            dense_terms.append(dense_info_nce(dense[q].transpose(1, 2)[valid], positives.transpose(1, 2)[valid],
                                              owners, dense[k].mean(dim=2), self.options.temperature))
            matched.append(valid.float().mean())
        dense_loss = sum(dense_terms) / 2
        w = self.options.dense_weight
        return StepOutput(loss=(1 - w) * global_loss + w * dense_loss,
                          metrics={"global_loss": float(global_loss.detach()), "dense_loss": float(dense_loss.detach()),
                                   "matched_cells": float(sum(matched) / 2)}, embeddings=z_a.detach())

    def forward(self, batch: dict) -> StepOutput:
        view_a, view_b = batch["views"]
        boxes = require_boxes(batch, "DenseCL with match=geometry") if self.options.match == "geometry" else None
        if self.options.contrast == "simclr":
            return self._in_batch(view_a, view_b, boxes)
        negatives, dense_negatives = self.queue.get().clone(), self.dense_queue.get().clone()
        terms = [self._direction(view_a, view_b, boxes, negatives, dense_negatives)]
        if self.options.symmetric:
            terms.append(self._direction(view_b, view_a, _swapped(boxes), negatives, dense_negatives))
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
