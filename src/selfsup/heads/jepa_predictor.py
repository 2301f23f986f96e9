"""I-JEPA's predictor (Assran et al., "Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture", CVPR 2023, section 3 and appendix A): a narrow Vision Transformer that, given the context
encoder's tokens and the positions of a target block, predicts the target encoder's representations there.

For each target block it runs over [context tokens ; one query per target patch]: context tokens are mapped
to the predictor width and get the 2-D sin-cos embedding of their position; each query is a shared learnable
mask token plus the sin-cos embedding of the target position, so the queries differ only by where they are.
Only the queries' outputs are kept and mapped back to the encoder width. The M target blocks of an image are
predicted in M independent passes (batched), so one block cannot see another block's queries.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn

from selfsup.backbones.vit import sincos_pos_embed_2d


class JEPAPredictor(nn.Module):
    def __init__(self, embed_dim: int, predictor_dim: int = 384, depth: int = 6, num_heads: int = 6,
                 mlp_ratio: float = 4.0):
        super().__init__()
        from timm.models.vision_transformer import Block

        if predictor_dim % 4:
            raise ValueError(f"the predictor's sin-cos positions need predictor_dim divisible by 4, got {predictor_dim}")
        if predictor_dim % num_heads:
            raise ValueError(f"predictor_dim {predictor_dim} is not divisible by predictor_heads {num_heads}")
        self.predictor_dim = predictor_dim
        self.embed = nn.Linear(embed_dim, predictor_dim)
        self.mask_token = nn.Parameter(torch.zeros(predictor_dim))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*[Block(predictor_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm)
                                      for _ in range(depth)])
        self.norm = norm(predictor_dim)
        self.proj = nn.Linear(predictor_dim, embed_dim)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        # I-JEPA's initialisation: the residual branches of block l are scaled by 1 / sqrt(2 l), so the
        # residual stream does not grow with depth at the start of training.
        with torch.no_grad():
            for layer, block in enumerate(self.blocks, start=1):
                block.attn.proj.weight.div_(math.sqrt(2.0 * layer))
                block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))

    def forward(self, context: torch.Tensor, context_indices: torch.Tensor, target_indices: torch.Tensor,
                grid_size: tuple[int, int]) -> torch.Tensor:
        """Predict the target representations.

        ``context`` (B, K_c, D): context encoder outputs at patches ``context_indices`` (B, K_c);
        ``target_indices`` (B, M, K_t): M target blocks; ``grid_size``: the image's patch grid (row-major
        indices). Returns (B, M, K_t, D), in the order of ``target_indices``.
        """
        b, m, k_t = target_indices.shape
        k_c = context.shape[1]
        # Fixed positions (no training, any grid), in the dtype the blocks run in.
        pos = sincos_pos_embed_2d(self.predictor_dim, grid_size).to(context.device)
        x = self.embed(context)
        x = x + pos[context_indices].to(x.dtype)  # (B, K_c, P)
        queries = self.mask_token.to(x.dtype) + pos[target_indices].to(x.dtype)  # (B, M, K_t, P)
        # One pass per (image, target block): the context is repeated M times, image-major.
        x = torch.cat([x.repeat_interleave(m, dim=0), queries.reshape(b * m, k_t, -1)], dim=1)
        x = self.norm(self.blocks(x))[:, k_c:]
        return self.proj(x).reshape(b, m, k_t, -1)


__all__ = ["JEPAPredictor"]
