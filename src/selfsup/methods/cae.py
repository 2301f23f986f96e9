"""CAE: Chen, Ding, Wang, Xin, Chen, Han, Luo, Zeng, Wang, "Context Autoencoder for Self-Supervised Representation
Learning", IJCV 2023 (arXiv:2202.03026, 2022).

Masked image modelling that keeps representation learning in the encoder by putting a latent regressor between
the encoder and the decoder:

1. masking: the data workers draw ``mask_ratio`` of the patches (``mask``: any registered patch-mask strategy;
   the paper uses BEiT's block-wise masks, ``block``);
2. encoder: the ViT (the exported backbone) on the visible patches only;
3. latent contextual regressor: a query per masked patch (one learned token plus the patch's fixed 2-D sin-cos
   position) attends to the visible patches' latents (and the queries, the paper's cross-attention whose keys
   and values are the visible latents concatenated with the queries) and predicts the masked patches' latents;
4. alignment: the same encoder on the masked patches, without gradient, gives the targets of those predicted
   latents (MSE, weight ``align_weight``, 2 in the paper): the regressor's output must live in the encoder's
   representation space, so the decoder can only read what the encoder would have computed;
5. decoder: a light transformer on the predicted latents of the masked patches (with their positions) predicts
   their pixels; MSE against the per-patch normalised pixels (the paper predicts DALL-E tokens; pixels here, as
   its pixel-target variant and MAE do).

The decoder never sees the visible patches, unlike MAE's. All terms are per-sample means over this rank: DDP's
gradient averaging makes them global.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from timm.models.vision_transformer import Block

from selfsup.backbones.vit import gather_tokens
from selfsup.backbones.vit3d import patchify_nd, sincos_pos_embed_nd
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.methods.mae import plain_crop
from selfsup.views import MaskSpec, ViewSpec
from selfsup.views.mask_shapes import patch_mask_strategy


class CAEOptions(MethodOptions):
    mask_ratio: float = Field(0.5, gt=0, lt=1)  # the paper: 98 of 196 patches (50%) with block-wise masks
    mask: str = "block"
    mask_options: dict[str, Any] = Field(default_factory=dict)
    regressor_depth: int = Field(2, ge=1)  # the paper: 4 cross-attention blocks
    decoder_depth: int = Field(2, ge=1)  # the paper: 4 blocks
    num_heads: int = Field(4, ge=1)
    align_weight: float = Field(2.0, ge=0)
    normalize_target: bool = True
    crop_scale: tuple[float, float] = (0.2, 1.0)


class CrossBlock(nn.Module):
    """Pre-norm cross-attention (queries to context) and an MLP, each with a residual."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(queries)
        kv = self.norm_kv(torch.cat([context, queries], dim=1))  # the paper: keys and values include the queries
        queries = queries + self.attention(q, kv, kv, need_weights=False)[0]
        return queries + self.mlp(self.norm_mlp(queries))


@METHODS.register("cae")
class CAE(Method):
    Options = CAEOptions
    needs_vit = True
    test_options = {"regressor_depth": 1, "decoder_depth": 1, "num_heads": 2}

    def __init__(self, backbone: nn.Module, options: CAEOptions):
        super().__init__()
        if len(backbone.grid_size) != 2:
            raise ValueError("CAE masks images (a 2-D patch grid); for volumes use method: mae")
        self.options = options
        self.backbone = backbone
        self.patch_size = backbone.patch_size
        dim = backbone.embed_dim
        if dim % options.num_heads:
            raise ValueError(f"CAE: the ViT's width {dim} is not divisible by num_heads={options.num_heads}")
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.query, std=0.02)
        self.regressor = nn.ModuleList(CrossBlock(dim, options.num_heads) for _ in range(options.regressor_depth))
        self.regressor_norm = nn.LayerNorm(dim)
        self.decoder = nn.Sequential(*[Block(dim, options.num_heads, qkv_bias=True)
                                       for _ in range(options.decoder_depth)], nn.LayerNorm(dim))
        channels = backbone.spec.get("in_channels", 3)
        self.pixels = nn.Linear(dim, self.patch_size ** 2 * channels)
        strategy = patch_mask_strategy(options.mask, options.mask_ratio, backbone.grid_size, "CAE",
                                       **options.mask_options)
        self.views = ViewSpec(crops=(plain_crop(options.crop_scale),),
                              masks=MaskSpec(strategy, patch_size=self.patch_size, views=0))

    def forward(self, batch: dict) -> StepOutput:
        images, masks = batch["views"][0], batch["masks"]
        grid = self.backbone.grid_for(*images.shape[-2:])
        dim = self.backbone.embed_dim
        pos = sincos_pos_embed_nd(dim, grid).to(images.device, images.dtype)[None].expand(len(images), -1, -1)
        visible, masked = masks["visible"], masks["masked"]
        encoded = self.backbone.forward_tokens(images, keep_indices=visible)
        context = encoded["patches"] + gather_tokens(pos, visible)
        masked_pos = gather_tokens(pos, masked)
        latents = self.query.to(images.dtype).expand(len(images), masked.shape[1], -1) + masked_pos
        for block in self.regressor:
            latents = block(latents, context)
        latents = self.regressor_norm(latents)
        with torch.no_grad():  # the alignment targets: the encoder's own latents of the masked patches
            targets = self.backbone.forward_tokens(images, keep_indices=masked)["patches"]
        align = F.mse_loss(latents.float(), targets.float())
        predicted = self.pixels(self.decoder(latents + masked_pos))  # (B, Km, p * p * C)
        truth = gather_tokens(patchify_nd(images, self.patch_size), masked).float()
        if self.options.normalize_target:
            truth = (truth - truth.mean(-1, keepdim=True)) / (truth.var(-1, keepdim=True) + 1e-6).sqrt()
        reconstruction = F.mse_loss(predicted.float(), truth)
        loss = reconstruction + self.options.align_weight * align
        with torch.no_grad():
            embeddings = self.backbone.pool(encoded)
        return StepOutput(loss=loss, metrics={"reconstruction_loss": float(reconstruction.detach()),
                                              "alignment_loss": float(align.detach())}, embeddings=embeddings)
