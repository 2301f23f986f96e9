"""The Chamfer distance between point sets, Point-MAE's reconstruction loss (Pang et al., ECCV 2022: the L2
Chamfer distance between each masked patch's predicted and true points; Fan, Su, Guibas, "A Point Set
Generation Network for 3D Object Reconstruction from a Single Image", CVPR 2017).

Distributed semantics: a per-set mean, with no term that depends on other samples; DDP's gradient averaging
makes it the global mean, so it needs no gather.
"""
from __future__ import annotations

import torch


def chamfer_distance(a: torch.Tensor, b: torch.Tensor, squared: bool = True) -> torch.Tensor:
    """Mean over the batch of ``mean_i min_j d(a_i, b_j) + mean_j min_i d(a_i, b_j)`` for sets a (B, N, 3)
    and b (B, M, 3); d the squared Euclidean distance (``squared``, Point-MAE's L2 variant) or the distance."""
    distance = ((a[:, :, None] - b[:, None]) ** 2).sum(-1)  # (B, N, M)
    if not squared:
        distance = distance.clamp(min=1e-12).sqrt()
    return distance.min(dim=2).values.mean(dim=1).add(distance.min(dim=1).values.mean(dim=1)).mean()


__all__ = ["chamfer_distance"]
