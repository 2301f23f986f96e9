"""The transformer trunk that the encoders of tables and point clouds share: a set of tokens (feature tokens of a
row, point-patch tokens of a cloud), a class token, optional register tokens, pre-norm blocks, a final norm.

``encode(tokens, keep_indices=None)`` runs only the kept tokens (token dropping, as MAE and I-JEPA's context
encoder do on images) and returns ``{"cls": (B, D), "registers": (B, R, D) or None, "patches": (B, K, D)}``:
the layout of :meth:`selfsup.backbones.vit.ViTBackbone.forward_tokens`, so the methods read both alike. Register
tokens are T-JEPA's regularisation tokens (Thimonier et al. 2024), learned tokens that join every sequence and
that its authors found keep the latent-prediction task from collapsing; "registers" is their name in ViTs
(Darcet et al., "Vision Transformers Need Registers", ICLR 2024).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from selfsup.backbones.vit import attention_kernel, gather_tokens


class TokenTransformer(nn.Module):
    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, num_registers: int = 0,
                 global_pool: str = "avg"):
        super().__init__()
        if global_pool not in ("avg", "token"):
            raise ValueError(f"global_pool must be 'avg' (mean of the tokens) or 'token' (class token), not {global_pool!r}")
        self.embed_dim, self.global_pool, self.num_registers = embed_dim, global_pool, num_registers
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.registers = nn.Parameter(torch.zeros(1, num_registers, embed_dim)) if num_registers else None
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        nn.init.normal_(self.cls_token, std=0.02)
        if self.registers is not None:
            nn.init.normal_(self.registers, std=0.02)

    def encode(self, tokens: torch.Tensor, keep_indices: torch.Tensor | None = None) -> dict:
        if keep_indices is not None:
            tokens = gather_tokens(tokens, keep_indices)
        b = tokens.shape[0]
        prefix = [self.cls_token.expand(b, -1, -1)]
        if self.registers is not None:
            prefix.append(self.registers.expand(b, -1, -1))
        x = torch.cat([*prefix, tokens], dim=1)
        with attention_kernel(x):
            for block in self.blocks:
                x = block(x)
        x = self.norm(x)
        r = 1 + self.num_registers
        return {"cls": x[:, 0], "registers": x[:, 1:r] if self.num_registers else None, "patches": x[:, r:]}

    def pool(self, tokens: dict) -> torch.Tensor:
        return tokens["cls"] if self.global_pool == "token" else tokens["patches"].mean(dim=1)
