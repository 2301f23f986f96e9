"""PixPro: Xie, Lin, Zhang, Cao, Lin, Hu, "Propagate Yourself: Exploring Pixel-Level Consistency for Unsupervised
Visual Representation Learning", CVPR 2021 (arXiv:2011.10043).

Pixel-to-propagation consistency between the parts of two views that show the same part of the image:

1. two crops of an image (BYOL's augmentation; the batch carries their crop boxes and flips,
   ``ViewSpec.boxes``); the backbone's feature map (before pooling) of each goes through a projector of 1x1
   convolutions (an MLP per location);
2. the online branch smooths its projected features with the pixel propagation module (PPM): at every
   location, ``y_i = sum_j max(cos(x_i, x_j), 0) ** gamma * g(x_j)`` over the locations j of the same view, with
   g a 1x1 convolution (paper, eq. 3; gamma = 2);
3. the target branch is the exponential moving average of the backbone and projector (momentum 0.99 -> 1 on a
   cosine, BYOL-style) and gives the plain projected features x';
4. positive pairs are the cells of view a and view b whose centres, mapped back to the source image, lie
   within ``threshold`` (0.7) of the larger cell diagonal (:func:`selfsup.views.geometry.positive_pairs`); the
   loss is ``2 - cos(y_i, x'_j) - cos(y_j, x'_i)`` averaged over the positive pairs of each image, then over the
   images that have any (the paper's PixPro loss, symmetrised over the two views).

No negatives: the loss is a mean of per-image terms, so DDP's gradient averaging makes it global (BatchNorm in
the projector reads batch statistics, hence SyncBatchNorm). The paper's optional instance branch (PixContrast /
the instance-level BYOL head) is not included.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import AsymmetricViewsOptions, Scale
from selfsup.backbones.feature_maps import feature_map, require_feature_map
from selfsup.methods.parts.dense import conv_projector, require_boxes
from selfsup.methods.parts.ema import ema_update, frozen_copy
from selfsup.schedules import cosine_momentum
from selfsup.views.geometry import positive_pairs


class PixProOptions(AsymmetricViewsOptions):
    crop_scale: Scale = (0.3, 1.0)  # larger than the paper's 0.08 so two 32 px crops usually overlap
    momentum: float = Field(0.99, ge=0, le=1)  # start of the cosine schedule to 1
    projector_hidden_dim: int = Field(1024, ge=1)
    projector_out_dim: int = Field(128, ge=1)
    gamma: float = Field(2.0, gt=0)  # sharpness of the propagation's similarity (paper: 2)
    threshold: float = Field(0.7, gt=0)  # positive-pair distance, in cell diagonals (paper: 0.7)


def propagate(x: torch.Tensor, transform: nn.Module, gamma: float) -> torch.Tensor:
    """The pixel propagation module (PixPro, eq. 3) on projected features (B, D, h, w) -> (B, D, h * w)."""
    flat = F.normalize(x.flatten(2), dim=1)  # (B, D, N)
    similarity = torch.einsum("bdi,bdj->bij", flat, flat).clamp_min(0).pow(gamma)  # (B, N, N)
    values = transform(x).flatten(2)  # (B, D, N)
    return torch.einsum("bij,bdj->bdi", similarity, values)


def pair_consistency(online: torch.Tensor, target: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Mean over images with any positive pair of the mean ``1 - cos`` over their pairs (the paper's ``-cos``
    shifted to be >= 0): online (B, D, Na), target (B, D, Nb), pairs (B, Na, Nb) bool."""
    cos = torch.einsum("bdi,bdj->bij", F.normalize(online.float(), dim=1), F.normalize(target.float(), dim=1))
    weights = pairs.float()
    counts = weights.sum(dim=(1, 2))
    per_image = ((1 - cos) * weights).sum(dim=(1, 2)) / counts.clamp_min(1)
    has_pairs = (counts > 0).float()
    return (per_image * has_pairs).sum() / has_pairs.sum().clamp_min(1)


@METHODS.register("pixpro")
class PixPro(Method):
    Options = PixProOptions
    test_options = {"projector_hidden_dim": 32, "projector_out_dim": 16}
    sync_batchnorm = True

    def __init__(self, backbone: nn.Module, options: PixProOptions):
        super().__init__()
        require_feature_map(backbone, "PixPro")
        self.options = options
        self.backbone = backbone
        width = backbone.num_features
        self.projector = conv_projector(width, options.projector_hidden_dim, options.projector_out_dim)
        self.transform = nn.Conv2d(options.projector_out_dim, options.projector_out_dim, 1)  # g of the PPM
        self.target_backbone = frozen_copy(backbone)
        self.target_projector = frozen_copy(self.projector)
        self.momentum = options.momentum
        self.views = dataclasses.replace(options.asymmetric_views(), boxes=True)

    def on_step(self, progress: float) -> None:
        self.momentum = cosine_momentum(progress, self.options.momentum)

    def after_optimizer_step(self, progress: float) -> None:
        ema_update(self.target_backbone, self.backbone, self.momentum)
        ema_update(self.target_projector, self.projector, self.momentum)

    def forward(self, batch: dict) -> StepOutput:
        boxes = require_boxes(batch, "PixPro")
        views = torch.cat(batch["views"])
        projected = self.projector(feature_map(self.backbone, views))  # (2B, D, h, w)
        grid = tuple(projected.shape[-2:])
        online_a, online_b = propagate(projected, self.transform, self.options.gamma).chunk(2)
        with torch.no_grad():
            target_a, target_b = self.target_projector(feature_map(self.target_backbone, views)).flatten(2).chunk(2)
        pairs = positive_pairs(boxes[:, 0], boxes[:, 1], grid, grid, self.options.threshold)  # (B, Na, Nb)
        loss = (pair_consistency(online_a, target_b, pairs) +
                pair_consistency(online_b, target_a, pairs.transpose(1, 2)))
        pooled = projected[: len(online_a)].detach().mean(dim=(2, 3))
        return StepOutput(loss=loss, metrics={"momentum": self.momentum,
                                              "positive_pairs": float(pairs.sum(dim=(1, 2)).float().mean())},
                          embeddings=pooled)
