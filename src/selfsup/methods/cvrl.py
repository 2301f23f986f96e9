"""CVRL: Qian, Meng, Gong, Yang, Wang, Belongie, Cui, "Spatiotemporal Contrastive Video Representation Learning",
CVPR 2021 (arXiv:2008.03800).

Two clips of the same video, taken at different times, are positives; the clips of every other video in the
(global) batch are negatives (InfoNCE, section 3.1: :func:`~selfsup.losses.nt_xent`, whose gathering across
processes is declared and tested there). What the paper adds to SimCLR are the views (section 3.2):

- temporal sampling: each clip starts at an independent random frame (the paper favours nearby starts with a
  decreasing distribution; here uniform over the video), so the encoder must see past the moment;
- temporally consistent spatial augmentation: one random resized crop, flip, brightness / contrast jitter and
  grayscale for all frames of a clip (:mod:`selfsup.views.video`), independent between the two clips, so that
  frame-to-frame changes are motion, not augmentation.

The encoder is a video backbone (``vit_video_micro_cpu``, ``resnet3d_video``; the paper's 3D ResNet-50); a
3-layer MLP projects its pooled features to 128 dimensions; temperature 0.1.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.heads import mlp
from selfsup.losses import nt_xent
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.views import ViewSpec
from selfsup.views.video import ClipSpec


class CVRLOptions(MethodOptions):
    temperature: float = Field(0.1, gt=0)  # the paper's
    projector_hidden_dim: int = Field(512, ge=1)
    projector_out_dim: int = Field(128, ge=1)
    projector_layers: int = Field(3, ge=1)  # section 4: a 3-layer MLP head
    crop_scale: tuple[float, float] = (0.3, 1.0)
    jitter_p: float = Field(0.8, ge=0, le=1)
    grayscale_p: float = Field(0.2, ge=0, le=1)


def cvrl_clips(options, count: int = 2, stride: int = 1) -> ClipSpec:
    """CVRL's clip group: temporally consistent crop, flip, jitter (brightness / contrast 0.4) and grayscale."""
    return ClipSpec(count=count, stride=stride, scale=tuple(options.crop_scale), jitter_p=options.jitter_p,
                    grayscale_p=options.grayscale_p, brightness=0.4, contrast=0.4)


@METHODS.register("cvrl")
class CVRL(Method):
    Options = CVRLOptions
    test_options = {"projector_hidden_dim": 32, "projector_out_dim": 16}

    def __init__(self, backbone: nn.Module, options: CVRLOptions):
        super().__init__()
        self.backbone, self.options = backbone, options
        self.projector = mlp(backbone.num_features, options.projector_hidden_dim, options.projector_out_dim,
                             options.projector_layers)
        self.views = ViewSpec(crops=(cvrl_clips(options),))

    def forward(self, batch: dict) -> StepOutput:
        clip_a, clip_b = batch["views"]
        z_a, z_b = self.projector(self.backbone(torch.cat([clip_a, clip_b]))).chunk(2)
        return StepOutput(loss=nt_xent(z_a, z_b, self.options.temperature), embeddings=z_a.detach())
