"""A point-patch transformer for point clouds (the field kind ``points``): Point-MAE's encoder (Pang et al.,
"Masked Autoencoders for Point Cloud Self-supervised Learning", ECCV 2022), CPU-sized.

1. patches: G farthest-point centres, each with its k nearest points relative to it
   (:func:`~selfsup.backbones.point_ops.group_points`);
2. tokens: a mini-PointNet per patch (Qi et al., "PointNet", CVPR 2017, as Point-BERT and Point-MAE use it):
   a shared per-point MLP, a max over the patch, that global feature concatenated to every point, a second
   MLP, a second max: one token per patch, invariant to the order of its points;
3. positions: an MLP of the centre's coordinates, added to its token;
4. the shared :class:`~selfsup.backbones.token_transformer.TokenTransformer`; pooled features are the mean and
   the max of the patch tokens side by side (Point-MAE's classification input), 2 x ``embed_dim`` wide.

Input: (B, N, 3) clouds (:mod:`selfsup.views.points`). ``group(points)`` and ``encode_groups(centres,
neighbourhoods, keep_indices)`` let Point-MAE encode only the visible patches; ``forward_tokens(points,
keep_indices=...)`` does both.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from selfsup.backbones.base import BACKBONES
from selfsup.backbones.point_ops import group_points
from selfsup.backbones.token_transformer import TokenTransformer
from selfsup.backbones.vit import gather_tokens

POINT_CONFIGS = {
    "point_transformer_tiny": {"num_groups": 16, "group_size": 16, "embed_dim": 96, "depth": 4, "num_heads": 4,
                               "tokenizer_dim": 64},
}


class MiniPointNet(nn.Module):
    """Point-MAE's patch encoder. BatchNorm over every point of the batch, as theirs: a patch's offsets are a few
    hundredths of the cloud's radius, and normalising each channel over the points (not each point over its
    channels, which the bias would dominate) is what lets them speak."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.first = nn.ModuleList([nn.Linear(3, dim), nn.BatchNorm1d(dim), nn.Linear(dim, dim)])
        self.second = nn.ModuleList([nn.Linear(2 * dim, 2 * dim), nn.BatchNorm1d(2 * dim), nn.Linear(2 * dim, out_dim)])

    @staticmethod
    def _mlp(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        linear, norm, out = layers
        h = linear(x)
        h = norm(h.reshape(-1, h.shape[-1])).reshape(h.shape)
        return out(torch.relu(h))

    def forward(self, neighbourhoods: torch.Tensor) -> torch.Tensor:
        """(B, G, k, 3) -> (B, G, out_dim)."""
        per_point = self._mlp(self.first, neighbourhoods)
        pooled = per_point.max(dim=2, keepdim=True).values.expand_as(per_point)
        return self._mlp(self.second, torch.cat([pooled, per_point], dim=-1)).max(dim=2).values


class PointTransformer(nn.Module):
    field_kind = "points"
    patch_size = 1  # masks are over the 1-D sequence of patches

    def __init__(self, name: str, in_channels: int = 1, num_groups: int = 16, group_size: int = 16,
                 embed_dim: int = 96, depth: int = 4, num_heads: int = 4, mlp_ratio: float = 4.0,
                 tokenizer_dim: int = 64, num_registers: int = 0, global_pool: str = "avg"):
        super().__init__()
        self.spec = {"name": name, "in_channels": int(in_channels), "num_groups": num_groups,
                     "group_size": group_size, "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads,
                     "mlp_ratio": mlp_ratio, "tokenizer_dim": tokenizer_dim, "num_registers": num_registers,
                     "global_pool": global_pool}
        self.num_groups, self.group_size = num_groups, group_size
        self.tokenizer = MiniPointNet(tokenizer_dim, embed_dim)
        self.position = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, embed_dim))
        self.trunk = TokenTransformer(embed_dim, depth, num_heads, mlp_ratio, num_registers, global_pool)
        self.embed_dim = embed_dim
        self.num_features = embed_dim if global_pool == "token" else 2 * embed_dim
        self.num_tokens = num_groups
        self.grid_size = (num_groups,)

    def group(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if points.ndim != 3 or points.shape[-1] != 3:
            raise ValueError(f"a point encoder takes (B, N, 3) clouds, got shape {tuple(points.shape)}")
        return group_points(points.float(), self.num_groups, self.group_size)

    def encode_groups(self, centres: torch.Tensor, neighbourhoods: torch.Tensor,
                      keep_indices: torch.Tensor | None = None) -> dict:
        tokens = self.tokenizer(neighbourhoods) + self.position(centres)
        return self.trunk.encode(tokens if keep_indices is None else gather_tokens(tokens, keep_indices))

    def forward_tokens(self, points: torch.Tensor, keep_indices: torch.Tensor | None = None) -> dict:
        return self.encode_groups(*self.group(points), keep_indices)

    def pool(self, tokens: dict) -> torch.Tensor:
        """Point-MAE's features for classification: the mean and the max of the patch tokens, side by side
        (``global_pool: avg``), or the class token (``token``)."""
        if self.trunk.global_pool == "token":
            return tokens["cls"]
        return torch.cat([tokens["patches"].mean(dim=1), tokens["patches"].max(dim=1).values], dim=-1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_tokens(points))


def _register(name: str, config: dict) -> None:
    @BACKBONES.register(name)
    def build(in_channels: int = 1, **options) -> PointTransformer:
        return PointTransformer(name, in_channels, **{**config, **options})

    build.field_kind = "points"


for _name, _config in POINT_CONFIGS.items():
    _register(_name, _config)
