"""The attention kernel for a method's encoder passes on a CPU.

On a CPU, ``F.scaled_dot_product_attention`` (what timm's ViT blocks call) picks its fused flash-attention
kernel, whose backward under bf16 autocast is slow for the short sequences of CPU-sized ViTs (65 tokens of a
32 px image with 4 px patches, 17 of a 16 px local crop). Its math backend computes the same attention
(``softmax(q k^T / sqrt(d)) v``, equal up to float rounding) with plain matmuls. Measured in one process,
interleaved, on a 2-core AVX512-BF16 EPYC: LeJEPA's forward+backward on a recipe batch (128 images, 2 x 32 px
+ 4 x 16 px views, vit_micro_cpu) took 835 ms with the fused kernel and 350 ms with the math one under bf16
(fp32: 918 and 900 ms). Elsewhere (CUDA) the default choice stands.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def attention_kernel(device: torch.device) -> AbstractContextManager:
    """A context for the encoder passes on ``device``: the math attention on a CPU, the default elsewhere."""
    return sdpa_kernel([SDPBackend.MATH]) if device.type == "cpu" else nullcontext()


__all__ = ["attention_kernel"]
