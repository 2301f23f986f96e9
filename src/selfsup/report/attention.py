"""Class-token attention of a ViT's last block over the patches (as in the DINO paper's attention maps).

timm's attention runs through ``scaled_dot_product_attention`` and never materialises the attention matrix,
so it is recomputed here from what the last block's attention module receives: a forward pre-hook captures
its (normalised) input tokens, and ``softmax(q k^T * scale)`` is rebuilt from its own ``qkv`` projection
(and its q/k norms when it has them). Nothing in the model is changed.
"""
from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def last_block_attention(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The full attention of the last block, (B, heads, T, T) over all T tokens (prefix tokens first)."""
    attention_module = backbone.model.blocks[-1].attn
    captured: list[torch.Tensor] = []
    handle = attention_module.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
    try:
        backbone.forward_tokens(images)
    finally:
        handle.remove()
    tokens = captured[-1]
    batch, count, _ = tokens.shape
    heads, head_dim = attention_module.num_heads, attention_module.head_dim
    qkv = attention_module.qkv(tokens).reshape(batch, count, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    q, k = attention_module.q_norm(q), attention_module.k_norm(k)
    return ((q * attention_module.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


@torch.no_grad()
def class_token_attention(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """How much the class token attends to each patch in the last block, averaged over heads: (B, gh, gw).

    Raises ``ValueError`` for a ViT without a class token (there is no class-token row to show)."""
    if not getattr(backbone, "has_class_token", False):
        raise ValueError("the ViT has no class token (global_pool='avg'), so there is no class-token attention")
    grid = backbone.grid_for(images.shape[-2], images.shape[-1])
    was_training = backbone.training
    backbone.eval()
    try:
        attention = last_block_attention(backbone, images)
    finally:
        backbone.train(was_training)
    # Row 0 is the class token's query; the columns after the prefix (class + register tokens) are patches.
    to_patches = attention[:, :, 0, backbone.num_prefix_tokens:].mean(dim=1)
    return to_patches.reshape(len(images), *grid)
