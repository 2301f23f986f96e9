"""Where the feature-map cells of a view lie in the source image, and which cells of two views of one image
correspond: what dense methods (PixPro, DenseCL) match between views.

A view's geometry is its row of ``batch["boxes"]`` (``ViewSpec.boxes``; columns G_* of
:mod:`selfsup.views.device`): the crop box in pixels of the source image, the horizontal and vertical flips and
the quarter turns, applied in that order by :func:`~selfsup.views.augment.view_from_params` and by the device
path. Cell (i, j) of a ``rows`` x ``columns`` feature map of the view covers 1 / rows of the view's height and
1 / columns of its width; its centre, mapped back through the turns, the flips and the crop, is a point of the
source image (continuous pixel coordinates: pixel k spans [k, k + 1), the convention of
``F.interpolate(align_corners=False)`` with which the crop was resized). The turns are undone by turning a grid
of coordinates with the same ``torch.rot90`` call the views got, so the map is exact by construction.
"""
from __future__ import annotations

import torch

from selfsup.views.device import G_FLIP, G_HEIGHT, G_LEFT, G_TOP, G_TURNS, G_VFLIP, G_WIDTH


def cell_centres(boxes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(..., rows, columns, 2) source-image (y, x) of the centres of a (rows, columns) feature map's cells for
    views of geometry ``boxes`` (..., 7). Views with quarter turns need a square grid."""
    rows, columns = grid
    lead = boxes.shape[:-1]
    flat = boxes.reshape(-1, boxes.shape[-1]).float()
    fy = (torch.arange(rows, dtype=torch.float32, device=boxes.device) + 0.5) / rows  # fractions of the view
    fx = (torch.arange(columns, dtype=torch.float32, device=boxes.device) + 0.5) / columns
    fy = torch.where(flat[:, G_VFLIP, None] > 0.5, 1 - fy, fy)  # a flipped view's first row is the crop's last
    fx = torch.where(flat[:, G_FLIP, None] > 0.5, 1 - fx, fx)
    y = flat[:, G_TOP, None] + fy * flat[:, G_HEIGHT, None]  # (N, rows)
    x = flat[:, G_LEFT, None] + fx * flat[:, G_WIDTH, None]  # (N, columns)
    coords = torch.stack([y[:, :, None].expand(-1, rows, columns), x[:, None, :].expand(-1, rows, columns)], dim=1)
    turns = flat[:, G_TURNS].round().long()
    if (turns != 0).any() and rows != columns:
        raise ValueError(f"views with quarter turns need a square feature map, got {rows}x{columns}")
    for k in range(1, 4):  # the views were turned after the flips: turn the coordinate grid the same way
        selected = (turns == k).nonzero(as_tuple=True)[0]
        if len(selected):
            coords[selected] = torch.rot90(coords[selected], k, dims=(-2, -1))
    return coords.permute(0, 2, 3, 1).reshape(*lead, rows, columns, 2)


def cell_size(boxes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(..., 2) source-image (height, width) of one feature cell of each view (a quarter turn swaps them, which
    changes no distance threshold below: only their diagonal is used)."""
    return torch.stack([boxes[..., G_HEIGHT] / grid[0], boxes[..., G_WIDTH] / grid[1]], dim=-1).float()


def cell_distances(boxes_a: torch.Tensor, boxes_b: torch.Tensor, grid_a: tuple[int, int],
                   grid_b: tuple[int, int]) -> torch.Tensor:
    """(B, Na, Nb) distances between the cells of view a and those of view b of each image, in units of the
    larger of the two views' cell diagonals (PixPro's normalisation: Xie et al., CVPR 2021, section 3.1).
    ``boxes_*`` (B, 7); cells are numbered row-major."""
    a = cell_centres(boxes_a, grid_a).flatten(1, 2)
    b = cell_centres(boxes_b, grid_b).flatten(1, 2)
    diagonal = torch.maximum(cell_size(boxes_a, grid_a).norm(dim=-1), cell_size(boxes_b, grid_b).norm(dim=-1))
    return torch.cdist(a, b) / diagonal[:, None, None]


def positive_pairs(boxes_a: torch.Tensor, boxes_b: torch.Tensor, grid_a: tuple[int, int], grid_b: tuple[int, int],
                   threshold: float = 0.7) -> torch.Tensor:
    """(B, Na, Nb) bool: cell pairs of views a and b closer than ``threshold`` normalised cell diagonals
    (:func:`cell_distances`), PixPro's positive pairs (threshold 0.7 in the paper)."""
    return cell_distances(boxes_a, boxes_b, grid_a, grid_b) < threshold


def matched_cells(boxes_a: torch.Tensor, boxes_b: torch.Tensor, grid_a: tuple[int, int], grid_b: tuple[int, int],
                  threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """For every cell of view a, the nearest cell of view b in the source image: (index (B, Na) long, valid
    (B, Na) bool), valid where that nearest centre is within ``threshold`` normalised cell diagonals, i.e. where
    the cell of a lies in the part of the image both views show."""
    distances = cell_distances(boxes_a, boxes_b, grid_a, grid_b)
    nearest, index = distances.min(dim=-1)
    return index, nearest < threshold


__all__ = ["cell_centres", "cell_distances", "cell_size", "matched_cells", "positive_pairs"]
