"""LeJEPA: Balestriero and LeCun, "LeJEPA: Provable and Scalable Self-Supervised Learning Without the
Heuristics", arXiv:2511.08544, 2025.

A joint-embedding predictive architecture with one loss and one trade-off weight, and none of the usual
anti-collapse heuristics: no teacher, no EMA, no stop-gradient, no predictor asymmetry, no whitening.

1. Views: 2 global crops and 6 local crops with the same photometric recipe (the authors' defaults: scale
   0.3-1 and 0.05-0.3, colour jitter 0.4/0.4/0.2/0.1, grayscale, blur, solarize).
2. Every view goes through the backbone and a projector (3-layer MLP with BatchNorm): embeddings z (V, B, K).
3. Prediction loss (:func:`~selfsup.losses.predictive.view_prediction_loss`): every view's embedding predicts
   the mean embedding of the sample's global views, in squared error.
4. SIGReg (:func:`~selfsup.losses.sigreg.sigreg`): each view's embeddings (over the global batch) are pushed
   towards an isotropic Gaussian, tested along ``num_slices`` random directions with the Epps-Pulley statistic.
   The directions are redrawn every optimizer step from a generator seeded by the step count, a buffer of this
   module: every rank draws the same ones, and a resumed run the same ones as an uninterrupted run.
5. Loss = (1 - lambd) * prediction + lambd * SIGReg.

Works with any backbone (ResNets, ViTs: local crops at another resolution go through position-embedding
interpolation). Distributed: the prediction loss is per-sample; SIGReg gathers with autograd (see its module).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.heads import mlp
from selfsup.losses.predictive import view_prediction_loss
from selfsup.losses.sigreg import sigreg, sigreg_directions
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.methods.common import encode_by_resolution, multi_crop
from selfsup.views import CropSpec


class LeJEPAOptions(MethodOptions):
    lambd: float = Field(0.05, ge=0, le=1)  # the single trade-off weight (the paper's default)
    num_slices: int = Field(1024, ge=1)  # random directions per step
    num_knots: int = Field(17, ge=2)  # quadrature knots on [0, t_max]
    t_max: float = Field(3.0, gt=0)
    projector_hidden_dim: int = Field(2048, ge=1)
    projector_out_dim: int = Field(16, ge=1)  # the authors' minimal example (ViT-S on Imagenette) uses 16
    num_global_crops: int = Field(2, ge=1)
    num_local_crops: int = Field(6, ge=0)
    local_size: int = Field(16, ge=4)  # 98 px next to 224 px global crops in the paper
    global_scale: tuple[float, float] = (0.3, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.3)
    blur_p: float = Field(0.5, ge=0, le=1)
    solarize_p: float = Field(0.2, ge=0, le=1)


@METHODS.register("lejepa")
class LeJEPA(Method):
    Options = LeJEPAOptions
    test_options = {"num_slices": 32, "projector_hidden_dim": 32, "num_local_crops": 2, "local_size": 8}

    def __init__(self, backbone: nn.Module, options: LeJEPAOptions):
        super().__init__()
        o = self.options = options
        self.backbone = backbone
        self.projector = mlp(backbone.num_features, o.projector_hidden_dim, o.projector_out_dim, num_layers=3)
        # Optimizer steps taken: seeds the SIGReg directions (in the state dict, so resumes draw the same ones).
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        crop = CropSpec(count=o.num_global_crops, scale=tuple(o.global_scale), brightness=0.4, contrast=0.4,
                        saturation=0.2, hue=0.1, jitter_p=0.8, grayscale_p=0.2, blur_p=o.blur_p,
                        solarize_p=o.solarize_p)
        self.views = multi_crop(crop, o.num_local_crops, o.local_size, o.local_scale)

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        self.step += 1

    def forward(self, batch: dict) -> StepOutput:
        o = self.options
        z = torch.stack(encode_by_resolution(lambda x: self.projector(self.backbone(x)), batch["views"]))  # V, B, K
        prediction = view_prediction_loss(z, o.num_global_crops)
        directions = sigreg_directions(z.shape[-1], o.num_slices, step=int(self.step), device=z.device)
        regularizer = sigreg(z, directions, o.num_knots, o.t_max)
        loss = (1 - o.lambd) * prediction + o.lambd * regularizer
        metrics = {"prediction_loss": float(prediction.detach()), "sigreg": float(regularizer.detach())}
        return StepOutput(loss=loss, metrics=metrics, embeddings=z[0].detach())
