"""Point-MAE: Pang, Wang, Tay, Liu, Tian, Yuan, "Masked Autoencoders for Point Cloud Self-supervised Learning",
ECCV 2022 (arXiv:2203.06604).

MAE on point patches:

1. patches: the cloud's G farthest-point centres, each with its k nearest points relative to it (the point
   encoder's :meth:`~selfsup.backbones.point_transformer.PointTransformer.group`);
2. masking: ``mask_ratio`` (60%) of the patches, drawn per sample in the data workers (``random_tokens``);
3. encoding: only the visible patches' tokens (mini-PointNet + centre position) enter the transformer;
4. decoding: a light transformer gets the encoded visible tokens and a shared mask token at every hidden
   patch, each with its centre's position (the centres are not hidden: the paper lets the decoder know where
   to reconstruct), and a linear head predicts each hidden patch's k points;
5. loss: the L2 Chamfer distance between predicted and true points of every hidden patch
   (:func:`~selfsup.losses.chamfer.chamfer_distance`).

Views: the cloud resampled, scaled and shifted (the paper's scale-and-translate), no rotation by default.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field
from timm.models.vision_transformer import Block

from selfsup.backbones.point_ops import gather_points
from selfsup.backbones.vit import gather_tokens
from selfsup.losses.chamfer import chamfer_distance
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.methods.tjepa import check_token_encoder
from selfsup.views import MaskSpec, ViewSpec
from selfsup.views.points import PointViewSpec, RandomTokens


class PointMAEOptions(MethodOptions):
    mask_ratio: float = Field(0.6, gt=0, lt=1)
    decoder_dim: int = Field(96, ge=4)
    decoder_depth: int = Field(2, ge=1)
    decoder_heads: int = Field(4, ge=1)
    rotate: str = Field("none", pattern="^(none|z|so3)$")  # the views' rotation (the paper: none)
    scale: tuple[float, float] = (0.8, 1.2)


class PointDecoder(nn.Module):
    """Visible tokens + mask tokens at the hidden centres -> the hidden patches' points (B, K_m, k, 3)."""

    def __init__(self, embed_dim: int, dim: int, depth: int, heads: int, group_size: int):
        super().__init__()
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, 4.0, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3 * group_size)
        self.group_size = group_size
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, visible_tokens: torch.Tensor, visible_centres: torch.Tensor,
                hidden_centres: torch.Tensor) -> torch.Tensor:
        b, k_m = hidden_centres.shape[:2]
        x = torch.cat([self.embed(visible_tokens) + self.position(visible_centres),
                       self.mask_token.expand(b, k_m, -1) + self.position(hidden_centres)], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, -k_m:])).reshape(b, k_m, self.group_size, 3)


@METHODS.register("point_mae")
class PointMAE(Method):
    Options = PointMAEOptions
    field_kind = "points"
    test_options = {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}

    def __init__(self, backbone: nn.Module, options: PointMAEOptions):
        super().__init__()
        check_token_encoder(backbone, "points", "point_mae")
        self.options, self.backbone = options, backbone
        self.decoder = PointDecoder(backbone.embed_dim, options.decoder_dim, options.decoder_depth,
                                    options.decoder_heads, backbone.group_size)
        self.views = ViewSpec(crops=(PointViewSpec(count=1, size=backbone.num_tokens, rotate=options.rotate,
                                                   scale=tuple(options.scale), jitter_std=0.0),),
                              masks=MaskSpec(RandomTokens(options.mask_ratio), patch_size=1, views=0, dims=1))

    def reconstruct_patches(self, points: torch.Tensor, visible: torch.Tensor, hidden: torch.Tensor):
        """(predicted hidden patches (B, K_m, k, 3), their true points, the encoder's tokens)."""
        centres, neighbourhoods = self.backbone.group(points)
        tokens = self.backbone.encode_groups(centres, neighbourhoods, keep_indices=visible)
        predicted = self.decoder(tokens["patches"], gather_points(centres, visible), gather_points(centres, hidden))
        b, k_m = hidden.shape
        truth = gather_tokens(neighbourhoods.reshape(b, self.backbone.num_groups, -1), hidden)
        return predicted, truth.reshape(b, k_m, -1, 3), tokens

    def forward(self, batch: dict) -> StepOutput:
        points, masks = batch["views"][0], batch["masks"]
        predicted, truth, tokens = self.reconstruct_patches(points, masks["visible"], masks["masked"])
        loss = chamfer_distance(predicted.flatten(0, 1).float(), truth.flatten(0, 1).float())
        return StepOutput(loss=loss, embeddings=self.backbone.pool(tokens).detach())
