"""Point-cloud patches in plain, vectorised torch (no compiled extension): farthest point sampling, k nearest
neighbours, and the grouping of a cloud into patches that Point-MAE and Point-BERT tokenize (Pang, Wang, Tay,
Liu, Tian, Yuan, "Masked Autoencoders for Point Cloud Self-supervised Learning", ECCV 2022; Yu et al.,
"Point-BERT", CVPR 2022).

Every function takes a batch (B, N, 3) and loops only over the G centres of farthest point sampling, never
over points or clouds, so it runs on any device at batch speed.
"""
from __future__ import annotations

import torch


def farthest_point_sample(points: torch.Tensor, count: int) -> torch.Tensor:
    """(B, count) indices: point 0 first, then each time the point farthest from those chosen (squared
    Euclidean distance; ties go to the lowest index, as ``argmax`` breaks them)."""
    b, n, _ = points.shape
    if not 0 < count <= n:
        raise ValueError(f"farthest point sampling of {count} centres from clouds of {n} points")
    chosen = torch.zeros(b, count, dtype=torch.long, device=points.device)
    nearest = torch.full((b, n), float("inf"), device=points.device, dtype=points.dtype)
    rows = torch.arange(b, device=points.device)
    farthest = torch.zeros(b, dtype=torch.long, device=points.device)
    for i in range(count):
        chosen[:, i] = farthest
        distance = ((points - points[rows, farthest][:, None]) ** 2).sum(-1)
        nearest = torch.minimum(nearest, distance)
        farthest = nearest.argmax(dim=1)
    return chosen


def knn_indices(points: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """(B, G, k) indices of the ``k`` points of ``points`` (B, N, 3) nearest each query (B, G, 3), nearest first."""
    distance = ((queries[:, :, None] - points[:, None]) ** 2).sum(-1)  # (B, G, N): exact, no cdist shortcut
    return distance.topk(k, dim=-1, largest=False).indices


def gather_points(points: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``points[b, indices[b, ...]]``: (B, N, 3) and (B, ...) long -> (B, ..., 3)."""
    b = points.shape[0]
    flat = indices.reshape(b, -1)
    out = torch.gather(points, 1, flat[..., None].expand(-1, -1, points.shape[-1]))
    return out.reshape(*indices.shape, points.shape[-1])


def group_points(points: torch.Tensor, num_groups: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(centres (B, G, 3), neighbourhoods (B, G, k, 3)): G farthest-point centres and each one's k nearest
    points, relative to the centre (Point-MAE's patches)."""
    centres = gather_points(points, farthest_point_sample(points, num_groups))
    neighbourhoods = gather_points(points, knn_indices(points, centres, group_size))
    return centres, neighbourhoods - centres[:, :, None]


__all__ = ["farthest_point_sample", "gather_points", "group_points", "knn_indices"]
