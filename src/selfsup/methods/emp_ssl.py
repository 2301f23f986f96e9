"""EMP-SSL: Tong, Chen, Ma, LeCun, "EMP-SSL: Towards Self-Supervised Learning in One Training Epoch", 2023
(arXiv:2304.03977).

Extreme multi-patch: every image gives K fixed-size patches (the paper: 20 to 200 per image; random resized crops
of a fixed 25% of the area, aspect 1), each through the backbone and a projector to an L2-normalised z. The loss
needs no negatives, EMA teacher, predictor or stop-gradient:

    loss = -(1/K) sum_k [ R(Z_k) + lambda * D(Z_k, Z_mean) ]

with R the total coding rate of MCR2 (Yu et al., NeurIPS 2020) of the k-th patch set over the (global) batch,
which keeps the embeddings from collapsing, and D the cosine similarity of every patch's z with the mean z of its
image's patches (:func:`selfsup.losses.emp_ssl_loss`; epsilon^2 = 0.2, lambda = 200 as in the paper). The many
patches per step are what let it learn in few epochs. The balance of the two terms depends on the projection
width d: on spread embeddings, a patch's gradient from the coding rate has a size of about d / (m K (1 + eps))
(m images, K patches) against at most lambda / (m K) from the invariance, so d / lambda sets the balance:
lambda = 200 is the paper's balance at its d = 1024, and a narrow projector lets the invariance win. Under DDP the coding rate is that of the global batch
(gathered with autograd) and the invariance a per-image mean; the projector's BatchNorm stays per rank (the
coding rate, not BatchNorm, is what prevents collapse, so no SyncBatchNorm is asked for).

Defaults are the paper's CIFAR settings, except ``patch_size``: the paper resizes each 16-px patch of a 32-px image
back to 32 px; here it stays at its native 16 px (4x cheaper, and the whole image seen at evaluation then has
the pixel scale the backbone was trained at; ``patch_size: 32`` gives the paper's). The paper's figures
evaluate a bag of patch features (the mean over 128 patches of the projector's first hidden layer); selfsup's
default kNN and linear probe see the exported backbone's features of the whole image, and the ``bag_of_patches``
protocol (:mod:`selfsup.eval.protocols.bag_of_patches`) the mean of the backbone's features over a fixed grid
of patches.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.heads import mlp
from selfsup.losses import emp_ssl_loss
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.methods.common import Probability
from selfsup.views import CropSpec, ViewSpec


class EMPSSLOptions(MethodOptions):
    num_patches: int = Field(20, ge=2)  # K: the README's CIFAR command (the paper: 20 to 200)
    patch_scale: float = Field(0.25, gt=0, le=1)  # area fraction of every patch, fixed: 16 px of a 32-px image
    patch_size: int | None = Field(16, ge=4)  # pixels each patch is resized to (None: data.image_size, the paper's)
    eps: float = Field(0.2, gt=0)  # epsilon^2 of the coding rate
    invariance_weight: float = Field(200.0, ge=0)  # lambda
    projector_hidden_dim: int = Field(4096, ge=1)
    projector_out_dim: int = Field(1024, ge=1)
    projector_layers: int = Field(3, ge=1)  # linear-BN-ReLU, linear-BN-ReLU, linear (the authors' code)
    colour_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.2)  # brightness, contrast, saturation, hue
    jitter_p: Probability = 0.8
    grayscale_p: Probability = 0.2
    blur_p: Probability = 0.1
    solarize_p: Probability = 0.1

    def patches(self) -> ViewSpec:
        """K patches of one fixed area and aspect 1, each with its own flip and photometric draw."""
        brightness, contrast, saturation, hue = self.colour_jitter
        scale = (self.patch_scale, self.patch_scale)
        return ViewSpec(crops=(CropSpec(count=self.num_patches, size=self.patch_size, scale=scale, ratio=(1.0, 1.0),
                                        jitter_p=self.jitter_p, brightness=brightness, contrast=contrast,
                                        saturation=saturation, hue=hue, grayscale_p=self.grayscale_p,
                                        blur_p=self.blur_p, solarize_p=self.solarize_p),))


@METHODS.register("emp_ssl")
class EMPSSL(Method):
    Options = EMPSSLOptions
    test_options = {"num_patches": 3, "patch_size": 8, "projector_hidden_dim": 32, "projector_out_dim": 16}

    def __init__(self, backbone: nn.Module, options: EMPSSLOptions):
        super().__init__()
        self.backbone = backbone
        self.projector = mlp(backbone.num_features, options.projector_hidden_dim, options.projector_out_dim,
                             options.projector_layers)
        self.eps, self.invariance_weight = options.eps, options.invariance_weight
        self.views = options.patches()

    def forward(self, batch: dict) -> StepOutput:
        patches = batch["views"]
        z = F.normalize(self.projector(self.backbone(torch.cat(patches))), dim=-1)  # one call: BN sees every patch
        z = z.view(len(patches), -1, z.shape[-1])  # (K, B, D)
        loss, terms = emp_ssl_loss(z, eps=self.eps, invariance_weight=self.invariance_weight)
        return StepOutput(loss=loss, metrics=terms, embeddings=z[0].detach())
