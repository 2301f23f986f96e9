"""The MAE decoder (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, section 3):
a light transformer that receives the encoded visible patches plus one shared, learned mask token at every
hidden position, adds fixed 2-D sin-cos position embeddings (so mask tokens know where they are), and predicts
a vector per patch (pixels for MAE's pixel decoder, features for CMAE's feature decoder). On a 3-D patch grid
(volumes, :mod:`selfsup.backbones.vit3d`) the positions are the 3-D sin-cos ones.

It is used only during pre-training, so it can be narrow and shallow (the paper's default is 8 blocks of
width 512 behind a ViT-L; one block still works): most compute stays in the encoder, which sees only the
visible quarter of the tokens.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from selfsup.backbones.vit3d import sincos_pos_embed_nd


class MAEDecoder(nn.Module):
    def __init__(self, encoder_dim: int, out_dim: int, grid_size: tuple[int, ...], dim: int = 512, depth: int = 8,
                 num_heads: int = 16, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decoder width {dim} is not divisible by its {num_heads} heads")
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, out_dim)
        # Not persistent: a function of the grid, recomputed for other grids; checkpoints need not hold it.
        self.register_buffer("pos_embed", sincos_pos_embed_nd(dim, grid_size)[None], persistent=False)
        self.grid_size = tuple(grid_size)
        # The paper's initialization: small normal mask token, Xavier-uniform linear layers.
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def _pos(self, grid_size: tuple[int, ...]) -> torch.Tensor:
        if tuple(grid_size) == self.grid_size:
            return self.pos_embed
        return sincos_pos_embed_nd(self.pos_embed.shape[-1], grid_size)[None].to(self.pos_embed.device)

    def forward(self, visible: torch.Tensor, visible_indices: torch.Tensor, grid_size: tuple[int, ...],
                prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Predictions for every patch, (B, N, out_dim) in row-major order.

        ``visible`` (B, K, E): encoder outputs of the visible patches, in the order of ``visible_indices``
        (B, K) (row-major patch indices); ``prefix`` (B, P, E): class / register tokens, which join the
        decoder's attention without a position (as in the encoder) and are dropped from the output.
        """
        n = math.prod(grid_size)
        x = self.embed(visible)
        # Every token back at its patch: a one-hot (B, K, N) placement matrix puts the visible tokens in place,
        # the mask token fills the rest. A matmul rather than scatter: exact, differentiable, deterministic
        # on every device, and its cost (B K N D) is small next to a decoder block's.
        place = nn.functional.one_hot(visible_indices, n).to(x.dtype)
        tokens = place.transpose(1, 2) @ x + (1 - place.sum(dim=1)).unsqueeze(-1) * self.mask_token.to(x.dtype)
        tokens = tokens + self._pos(grid_size).to(x.dtype)
        start = 0
        if prefix is not None:
            tokens = torch.cat([self.embed(prefix), tokens], dim=1)
            start = prefix.shape[1]
        return self.pred(self.norm(self.blocks(tokens)))[:, start:]
