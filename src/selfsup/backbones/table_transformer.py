"""A feature-token transformer for table rows (the field kind ``table``): FT-Transformer's layout (Gorishniy,
Rubachov, Khrulkov, Babenko, "Revisiting Deep Learning Models for Tabular Data", NeurIPS 2021).

Every column becomes a token: a numeric value x_j is ``x_j w_j + b_j``, a category c of column j is
``E_j[c] + b_j`` (a category embedding per column), and a value that is missing or hidden by a view is the
column's learned "missing" token ``m_j``. The per-column biases tell the tokens apart (they are the positions
of a row's features). The tokens go through :class:`~selfsup.backbones.token_transformer.TokenTransformer`;
pooled features are the mean of the feature tokens (``global_pool: avg``), the class token (``token``), or
every feature token side by side (``flatten``: F x embed_dim features, the representation T-JEPA's probes read,
Thimonier et al. 2024; a row's columns have fixed positions, so concatenating them keeps which feature said what).

Input: (B, 2, F) rows of :mod:`selfsup.data.tables` (encoded values, presence). The column layout,
``cardinalities`` (0 for a numeric column, the number of categories of a categorical one), comes from the
data (the source's ``encoder_options``) and is kept in the spec, so a saved encoder rebuilds with it.
``forward_tokens(rows, keep_indices=...)`` encodes only some features (T-JEPA's context encoder).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from selfsup.backbones.base import BACKBONES
from selfsup.backbones.token_transformer import TokenTransformer
from selfsup.config import ConfigError

TABLE_CONFIGS = {
    "table_transformer_tiny": {"embed_dim": 64, "depth": 3, "num_heads": 4},
    "table_transformer_small": {"embed_dim": 128, "depth": 4, "num_heads": 8},
}


class FeatureTokenizer(nn.Module):
    def __init__(self, cardinalities: list[int], dim: int):
        super().__init__()
        width = len(cardinalities)
        cards = torch.tensor(cardinalities, dtype=torch.int64)
        offsets = torch.cumsum(torch.cat([torch.ones(1, dtype=torch.int64), cards[:-1]]), 0)  # row 0: numeric
        self.register_buffer("is_category", cards > 0, persistent=False)
        self.register_buffer("offsets", torch.where(cards > 0, offsets, 0), persistent=False)
        self.register_buffer("top", (cards - 1).clamp(min=0), persistent=False)
        self.weight = nn.Parameter(torch.randn(width, dim) * 0.1)
        self.bias = nn.Parameter(torch.randn(width, dim) * 0.1)
        self.missing = nn.Parameter(torch.randn(width, dim) * 0.1)
        self.categories = nn.Embedding(1 + int(cards.sum()), dim)
        nn.init.normal_(self.categories.weight, std=0.1)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        values, present = rows[:, 0], rows[:, 1] > 0
        numeric = values[..., None] * self.weight
        index = values.round().long().clamp(min=0)
        index = torch.minimum(index, self.top) * self.is_category + self.offsets
        tokens = torch.where(self.is_category[None, :, None], self.categories(index), numeric) + self.bias
        return torch.where(present[..., None], tokens, self.missing.expand_as(tokens))


class TableTransformer(nn.Module):
    field_kind = "table"
    patch_size = 1  # one token per feature: masks over features use a 1-D grid of F tokens

    def __init__(self, name: str, in_channels: int = 1, cardinalities: list[int] | None = None, embed_dim: int = 64,
                 depth: int = 3, num_heads: int = 4, mlp_ratio: float = 4.0, num_registers: int = 0,
                 global_pool: str = "avg"):
        super().__init__()
        if not cardinalities:
            raise ConfigError(f"config key 'backbone.name': {name} encodes table rows and takes its column layout "
                              "from the data (a .csv / .parquet table or a table-* dataset); train it on table data")
        self.spec = {"name": name, "in_channels": int(in_channels), "cardinalities": [int(c) for c in cardinalities],
                     "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads, "mlp_ratio": mlp_ratio,
                     "num_registers": num_registers, "global_pool": global_pool}
        self.tokenizer = FeatureTokenizer(list(cardinalities), embed_dim)
        self.flatten = global_pool == "flatten"
        self.trunk = TokenTransformer(embed_dim, depth, num_heads, mlp_ratio, num_registers,
                                      "avg" if self.flatten else global_pool)
        self.num_tokens = len(cardinalities)
        self.embed_dim = embed_dim
        self.num_features = embed_dim * self.num_tokens if self.flatten else embed_dim
        self.grid_size = (self.num_tokens,)

    def forward_tokens(self, rows: torch.Tensor, keep_indices: torch.Tensor | None = None) -> dict:
        return self.trunk.encode(self.tokenizer(rows), keep_indices)

    def pool(self, tokens: dict) -> torch.Tensor:
        return tokens["patches"].flatten(1) if self.flatten else self.trunk.pool(tokens)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_tokens(rows))


def _register(name: str, config: dict) -> None:
    @BACKBONES.register(name)
    def build(in_channels: int = 1, **options) -> TableTransformer:
        return TableTransformer(name, in_channels, **{**config, **options})

    build.field_kind = "table"


for _name, _config in TABLE_CONFIGS.items():
    _register(_name, _config)
