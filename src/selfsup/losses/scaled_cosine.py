"""GraphMAE's scaled cosine error (Hou, Liu, Cen, Dong, Yang, Wang, Tang, "GraphMAE: Self-Supervised Masked
Graph Autoencoders", KDD 2022, eq. 2): ``mean_i (1 - cos(x_i, z_i)) ** alpha`` over the masked nodes, where
``alpha >= 1`` down-weights the easy nodes (those already reconstructed well) as a focal loss does.

Distributed semantics: a per-node mean with no term that depends on other samples; DDP's gradient averaging
makes it global (ranks with different node counts weigh their nodes by rank, as every per-sample loss does).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def scaled_cosine_error(prediction: torch.Tensor, target: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """(N, D) predictions and targets -> the mean of ``(1 - cos) ** alpha`` over the N rows (float32)."""
    if prediction.shape != target.shape:
        raise ValueError(f"scaled_cosine_error: prediction {tuple(prediction.shape)} and target "
                         f"{tuple(target.shape)} differ in shape")
    cosine = F.cosine_similarity(prediction.float(), target.detach().float(), dim=-1)
    return (1 - cosine).pow(alpha).mean()


__all__ = ["scaled_cosine_error"]
