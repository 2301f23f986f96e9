"""I-JEPA: Assran, Duval, Misra, Bojanowski, Vincent, Rabbat, LeCun, Ballas, "Self-Supervised Learning from
Images with a Joint-Embedding Predictive Architecture", CVPR 2023 (arXiv:2301.08243).

Predict representations, not pixels: from one large context block of an image, predict the representations of
several target blocks of the same image.

1. Masks (drawn per sample in the data workers, :class:`~selfsup.views.masks.MultiBlockMask`): M = 4 target
   blocks (15-20% of the patches each) and a context block (85-100%) from which the targets are removed.
2. Targets: the EMA target encoder sees the WHOLE image; its patch tokens, layer-normalised without affine
   parameters (the authors' code), are gathered at each target block. No gradient.
3. Context: the context encoder (the backbone being trained) sees only the context patches (token dropping:
   the other patches never enter its blocks).
4. Predictor (:class:`~selfsup.heads.JEPAPredictor`): a narrow ViT that maps the context tokens plus mask
   tokens carrying the target positions to predicted target representations.
5. Loss in latent space, averaged over every target patch (:func:`~selfsup.losses.latent_prediction_loss`):
   smooth L1 as in the authors' code, or the paper's L2.
6. The target encoder follows the context encoder by EMA, the momentum rising LINEARLY from 0.996 to 1.0
   (the paper's schedule; the BYOL / DINO family use a cosine).

The only augmentation is a random resized crop (scale 0.3-1): I-JEPA's point is that the masking, not
hand-crafted colour or flip invariances, defines the task.

Deviation: the loader gives every sample the same number of context and target patches (a worker cannot trim
to the batch minimum as the authors' collator does), see :class:`~selfsup.views.masks.MultiBlockMask`.
Needs a ViT backbone (``forward_tokens``); ``vit_*_cpu`` with ``sincos_pos_embed: true`` and
``global_pool: avg`` is I-JEPA's own set-up (fixed positions, evaluated on the average of patch tokens).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.backbones.vit import gather_tokens
from selfsup.methods.parts.ema import ema_update, frozen_copy
from selfsup.schedules import linear_ramp
from selfsup.heads.jepa_predictor import JEPAPredictor
from selfsup.losses.predictive import latent_prediction_loss
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.views import CropSpec, MaskSpec, MultiBlockMask, ViewSpec


class IJEPAOptions(MethodOptions):
    predictor_dim: int = Field(384, ge=4)  # ViT-H's predictor: 384 wide, 12 deep (paper, appendix A)
    predictor_depth: int = Field(12, ge=1)
    predictor_heads: int = Field(12, ge=1)
    num_targets: int = Field(4, ge=1)
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    loss: Literal["smooth_l1", "l2"] = "smooth_l1"
    momentum: float = Field(0.996, ge=0, le=1)  # target EMA: linear from here ...
    final_momentum: float = Field(1.0, ge=0, le=1)  # ... to here over training
    crop_scale: tuple[float, float] = (0.3, 1.0)


@METHODS.register("ijepa")
class IJEPA(Method):
    Options = IJEPAOptions
    needs_vit = True
    test_options = {"predictor_dim": 16, "predictor_depth": 1, "predictor_heads": 2}

    def __init__(self, backbone: nn.Module, options: IJEPAOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone  # the context encoder
        self.target_backbone = frozen_copy(backbone)
        self.predictor = JEPAPredictor(backbone.embed_dim, options.predictor_dim, options.predictor_depth,
                                       options.predictor_heads)
        self.momentum = options.momentum
        crop = CropSpec(count=1, scale=tuple(options.crop_scale), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)
        masks = MultiBlockMask(num_targets=options.num_targets, target_scale=tuple(options.target_scale),
                               target_aspect=tuple(options.target_aspect), context_scale=tuple(options.context_scale))
        self.views = ViewSpec(crops=(crop,), masks=MaskSpec(masks, patch_size=backbone.patch_size, views=0))

    def on_step(self, progress: float) -> None:
        o = self.options
        self.momentum = linear_ramp(progress, o.momentum, o.final_momentum)

    def after_optimizer_step(self, progress: float) -> None:
        ema_update(self.target_backbone, self.backbone, self.momentum)

    def forward(self, batch: dict) -> StepOutput:
        image = batch["views"][0]
        context_indices = batch["masks"]["context"]  # (B, K_c)
        target_indices = batch["masks"]["targets"]  # (B, M, K_t)
        b, m, k_t = target_indices.shape

        with torch.no_grad():  # targets: the full image through the EMA encoder, normalised per token
            tokens = self.target_backbone.forward_tokens(image)["patches"]
            tokens = F.layer_norm(tokens.float(), tokens.shape[-1:])
            targets = gather_tokens(tokens, target_indices.reshape(b, m * k_t)).reshape(b, m, k_t, -1)

        context = self.backbone.forward_tokens(image, keep_indices=context_indices)["patches"]
        grid = self.backbone.grid_for(image.shape[-2], image.shape[-1])
        predictions = self.predictor(context, context_indices, target_indices, grid)
        loss = latent_prediction_loss(predictions, targets, kind=self.options.loss)
        return StepOutput(loss=loss, metrics={"ema_momentum": self.momentum},
                          embeddings=context.mean(dim=1).detach())
