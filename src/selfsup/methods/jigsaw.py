"""Jigsaw puzzles: Noroozi, Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles",
ECCV 2016 (arXiv:1603.09246). The ConvNet sibling of position prediction
(:mod:`selfsup.methods.position_prediction`).

Each view is cut into a ``grid`` x ``grid`` set of tiles; each tile is a random ``tile - gap`` pixel crop inside
its cell (the gap hides the continuation of edges and textures across tiles, the paper's shortcut) and is
normalised by its own mean and std (chromatic and brightness shortcuts). The tiles are shuffled by one of
``num_permutations`` permutations, chosen at the start as a set of maximal minimal Hamming distance (the paper's
greedy rule, from a fixed random pool), and the network predicts which: every tile goes through the backbone
(shared weights, the paper's context-free network), a shared linear layer per tile, the tiles' outputs are
concatenated in the shuffled order and an MLP classifies the permutation. The permutation of each image is drawn
from the global torch generator (seeded by the run, saved in checkpoints). A per-sample mean loss: DDP averaging
makes it global.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.views import CropSpec, ViewSpec


class JigsawOptions(MethodOptions):
    grid: int = Field(3, ge=2, le=4)  # tiles per side (the paper: 3)
    num_permutations: int = Field(100, ge=2)  # the paper's best trade-off: 100 (from 1000)
    gap_fraction: float = Field(0.2, ge=0, lt=1)  # of a tile's side, left out at random around its crop
    tile_dim: int = Field(64, ge=1)  # the shared per-tile layer (the paper's fc7: 512 at ImageNet scale)
    hidden_dim: int = Field(512, ge=1)
    crop_scale: tuple[float, float] = (0.5, 1.0)


def permutation_set(tiles: int, count: int, seed: int = 0, pool: int = 5000) -> torch.Tensor:
    """(count, tiles) permutations chosen greedily for maximal minimal Hamming distance (Noroozi & Favaro,
    algorithm 1) among a fixed random pool (all of them when there are at most ``pool``)."""
    if count > math.factorial(tiles):
        raise ValueError(f"jigsaw: {tiles} tiles have only {math.factorial(tiles)} permutations, not {count}")
    rng = np.random.default_rng(seed)
    if math.factorial(tiles) <= pool:
        candidates = np.array(list(itertools.permutations(range(tiles))))
    else:
        candidates = np.unique(np.stack([rng.permutation(tiles) for _ in range(pool)]), axis=0)
    chosen = [int(rng.integers(len(candidates)))]
    distance = (candidates != candidates[chosen[0]]).sum(1)
    while len(chosen) < count:
        best = int(distance.argmax())
        chosen.append(best)
        distance = np.minimum(distance, (candidates != candidates[best]).sum(1))
    return torch.from_numpy(candidates[chosen]).long()


def cut_tiles(images: torch.Tensor, grid: int, gap_fraction: float) -> torch.Tensor:
    """(B, C, S, S) -> (B, grid * grid, C, t, t): row-major tiles, each a random crop of its cell (offsets from
    the global torch generator), normalised per tile."""
    b, c, size, _ = images.shape
    cell = size // grid
    tile = max(1, cell - int(round(gap_fraction * cell)))
    offsets = torch.randint(0, cell - tile + 1, (b, grid * grid, 2), device=images.device)
    starts = torch.arange(grid, device=images.device) * cell
    tops = starts.repeat_interleave(grid)[None] + offsets[..., 0]  # (B, T)
    lefts = starts.repeat(grid)[None] + offsets[..., 1]
    steps = torch.arange(tile, device=images.device)
    rows = (tops[..., None] + steps)[..., :, None]  # (B, T, t, 1)
    columns = (lefts[..., None] + steps)[..., None, :]  # (B, T, 1, t)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    tiles = images.permute(0, 2, 3, 1)[batch, rows, columns]  # (B, T, t, t, C)
    tiles = tiles.permute(0, 1, 4, 2, 3)
    mean = tiles.mean(dim=(2, 3, 4), keepdim=True)
    std = tiles.std(dim=(2, 3, 4), keepdim=True).clamp_min(1e-3)
    return (tiles - mean) / std


@METHODS.register("jigsaw")
class Jigsaw(Method):
    Options = JigsawOptions
    test_options = {"grid": 2, "num_permutations": 4, "gap_fraction": 0.0, "tile_dim": 8, "hidden_dim": 16}

    def __init__(self, backbone: nn.Module, options: JigsawOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        tiles = options.grid ** 2
        self.register_buffer("permutations", permutation_set(tiles, options.num_permutations), persistent=False)
        self.tile_head = nn.Sequential(nn.Linear(backbone.num_features, options.tile_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Linear(tiles * options.tile_dim, options.hidden_dim), nn.ReLU(inplace=True),
                                        nn.Linear(options.hidden_dim, options.num_permutations))
        self.views = ViewSpec(crops=(CropSpec(count=1, scale=tuple(options.crop_scale), jitter_p=0.0,
                                              grayscale_p=0.0),))

    def forward(self, batch: dict) -> StepOutput:
        (images,) = batch["views"]
        tiles = cut_tiles(images, self.options.grid, self.options.gap_fraction)  # (B, T, C, t, t)
        b, t = tiles.shape[:2]
        targets = torch.randint(0, len(self.permutations), (b,), device=images.device)
        order = self.permutations[targets]  # (B, T): shuffled position k shows tile order[k]
        shuffled = tiles[torch.arange(b, device=images.device)[:, None], order]
        features = self.backbone(shuffled.flatten(0, 1))  # every tile through the shared backbone
        logits = self.classifier(self.tile_head(features).view(b, -1))
        loss = F.cross_entropy(logits.float(), targets)
        accuracy = (logits.argmax(1) == targets).float().mean()
        return StepOutput(loss=loss, metrics={"permutation_accuracy": float(accuracy)},
                          embeddings=features.view(b, t, -1).mean(1).detach())
