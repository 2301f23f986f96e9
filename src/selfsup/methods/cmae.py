"""CMAE: Huang, Jin, Lu, Hou, Cheng, Fu, Shen, Feng, "Contrastive Masked Autoencoders are Stronger Vision
Learners", TPAMI 2023 (arXiv:2207.13532).

MAE plus a momentum-contrastive loss, so the encoder's features are discriminative (contrast) as well as
holistic (reconstruction). Two branches:

- online: MAE on view 0 (random resized crop and flip). The ViT encodes the visible patches (65% are
  masked); a pixel decoder reconstructs the masked patches (per-patch normalized MSE, as MAE); a small
  *feature decoder* (same structure, 2 blocks) completes the token set from the visible tokens, and the mean
  of its outputs goes through a projector and a predictor to a query ``q``;
- target: an EMA of the encoder and projector sees view 1 *whole* (no masking), with colour augmentation;
  the mean of its patch tokens, projected, is the key ``k``.

The contrastive loss is InfoNCE of ``q`` against the keys of the global batch (positive: its own key),
temperature 0.07, scaled by 2 tau as in MoCo v3 and the paper's code; the total is
``reconstruction + contrastive_weight * contrastive``. With ``feature_decoder_depth=0`` the query is the
projected mean of the encoded visible tokens (a plain "masked momentum contrast").

Departure from the paper: CMAE's target view is the online crop shifted by a few pixels (its "pixel
shifting"); the view pipeline delivers independent crops, so the target here is an independent random
resized crop of the same image (the paper's ablation finds this somewhat weaker, not broken).

Distributed: keys are all-gathered by ``info_nce`` (they carry no gradient), so every query meets the
negatives of the global batch; the reconstruction term is per sample (fixed masked count per sample). The
heads use BatchNorm, so the method asks for SyncBatchNorm under DDP.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.backbones.vit import patchify
from selfsup.methods.parts.ema import ema_update, frozen_copy
from selfsup.schedules import cosine_momentum
from selfsup.heads import MAEDecoder, mlp
from selfsup.losses import info_nce, masked_patch_mse
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.methods.common import simclr_crops
from selfsup.methods.mae import encode_visible, mae_reconstruction, plain_crop
from selfsup.views import MaskSpec, RandomMask, ViewSpec


class CMAEOptions(MethodOptions):
    mask_ratio: float = Field(0.65, ge=0, lt=1)  # the paper's best (table 8), a little below MAE's 0.75
    decoder_dim: int = Field(512, ge=4)
    decoder_depth: int = Field(8, ge=1)  # pixel decoder
    decoder_heads: int = Field(16, ge=1)
    feature_decoder_depth: int = Field(2, ge=0)  # 0: the query comes from the visible tokens directly
    projector_hidden_dim: int = Field(1536, ge=1)
    projector_out_dim: int = Field(256, ge=1)
    head_batch_norm: bool = True
    temperature: float = Field(0.07, gt=0)
    contrastive_weight: float = Field(1.0, ge=0)
    momentum: float = Field(0.996, ge=0, le=1)  # target EMA, cosine to 1
    normalize_target: bool = True
    crop_scale: tuple[float, float] = (0.2, 1.0)
    colour_strength: float = Field(0.5, ge=0)  # target view: jitter 0.4/0.4/0.4/0.1, p=0.8, grayscale 0.2
    blur_p: float = Field(0.5, ge=0, le=1)


@METHODS.register("cmae")
class CMAE(Method):
    Options = CMAEOptions
    needs_vit = True
    test_options = {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, "feature_decoder_depth": 1,
                    "projector_hidden_dim": 32, "projector_out_dim": 16}

    def __init__(self, backbone: nn.Module, options: CMAEOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        self.patch_size = backbone.patch_size
        dim, channels, grid = backbone.embed_dim, backbone.spec.get("in_channels", 3), backbone.grid_size
        o = options
        self.decoder = MAEDecoder(dim, self.patch_size ** 2 * channels, grid, o.decoder_dim, o.decoder_depth,
                                  o.decoder_heads)
        self.feature_decoder = (MAEDecoder(dim, dim, grid, o.decoder_dim, o.feature_decoder_depth, o.decoder_heads)
                                if o.feature_decoder_depth else None)
        bn = o.head_batch_norm
        self.projector = mlp(dim, o.projector_hidden_dim, o.projector_out_dim, num_layers=2, batch_norm=bn)
        self.predictor = mlp(o.projector_out_dim, o.projector_hidden_dim, o.projector_out_dim, batch_norm=bn)
        self.target_backbone = frozen_copy(backbone)
        self.target_projector = frozen_copy(self.projector)
        self.sync_batchnorm = bn
        self.momentum = o.momentum
        target_crop = simclr_crops(1, o.crop_scale, o.colour_strength, o.blur_p)
        self.views = ViewSpec(crops=(plain_crop(o.crop_scale), target_crop),
                              masks=MaskSpec(RandomMask(o.mask_ratio), patch_size=self.patch_size, views=0))

    def on_step(self, progress: float) -> None:
        self.momentum = cosine_momentum(progress, self.options.momentum)

    def after_optimizer_step(self, progress: float) -> None:
        ema_update(self.target_backbone, self.backbone, self.momentum)
        ema_update(self.target_projector, self.projector, self.momentum)

    def predict(self, images: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Pixel predictions for every patch from the visible ones (as :meth:`MAE.predict`)."""
        tokens, prefix, grid = encode_visible(self.backbone, images, visible)
        return self.decoder(tokens["patches"], visible, grid, prefix), tokens

    def query(self, tokens: dict, visible: torch.Tensor, prefix, grid) -> torch.Tensor:
        """The online branch's contrastive embedding from the encoded visible tokens."""
        features = tokens["patches"]
        if self.feature_decoder is not None:
            features = self.feature_decoder(features, visible, grid, prefix)
        return self.predictor(self.projector(features.mean(dim=1)))

    @torch.no_grad()
    def key(self, images: torch.Tensor) -> torch.Tensor:
        """The target branch's embedding of whole images: EMA encoder, mean patch token, EMA projector."""
        return self.target_projector(self.target_backbone.forward_tokens(images)["patches"].mean(dim=1))

    def forward(self, batch: dict) -> StepOutput:
        (online, target), masks = batch["views"], batch["masks"]
        visible = masks["visible"]
        tokens, prefix, grid = encode_visible(self.backbone, online, visible)
        pred = self.decoder(tokens["patches"], visible, grid, prefix)
        reconstruction = masked_patch_mse(pred, patchify(online, self.patch_size), masks["mask"],
                                          normalize_target=self.options.normalize_target)
        tau = self.options.temperature
        contrastive = 2 * tau * info_nce(self.query(tokens, visible, prefix, grid), self.key(target), temperature=tau)
        loss = reconstruction + self.options.contrastive_weight * contrastive
        with torch.no_grad():
            embeddings = self.backbone.pool(tokens)
        return StepOutput(loss=loss, embeddings=embeddings,
                          metrics={"reconstruction": float(reconstruction.detach()),
                                   "contrastive": float(contrastive.detach()), "momentum": self.momentum})

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
        """Input, masked input and reconstruction rows, as :meth:`MAE.reconstruct`."""
        return mae_reconstruction(self, images, seed, self.options.normalize_target)
