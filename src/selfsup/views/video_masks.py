"""VideoMAE V2's dual masking (Wang et al., "VideoMAE V2: Scaling Video Masked Autoencoders with Dual Masking",
CVPR 2023, section 3.2): a tube mask for the encoder and a second, decoder mask over the hidden tokens.

``tube_dual`` (:class:`DualTubeMask`) draws VideoMAE's tube mask (``ratio`` of the (row, column) positions hidden
at every time step, :class:`~selfsup.views.masks.TubeMask`) and then keeps for the decoder ``1 - decoder_ratio`` of
all tokens' worth of the hidden ones, ``decoded``: the decoder reconstructs only those, so its cost falls with
it. The paper keeps a "running cell" pattern (in every 2 x 2 cell of positions, the half whose parity matches
the time step, so that each frame keeps half its tokens in a pattern that shifts over time); the hidden tokens
of that pattern come first here, topped up at random to a fixed count so that every sample's tensors have the
same shape. Same keys as ``tube`` plus ``decoded`` (k,) long, a sorted subset of ``masked``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from selfsup.views.masks import MASK_STRATEGIES, TubeMask


def running_cell(z: int, r: int, c: int) -> bool:
    """Whether the running-cell pattern keeps position (r, c) at time step z (half of every 2 x 2 cell)."""
    return ((r % 2) * 2 + (c % 2) + z) % 4 < 2


@MASK_STRATEGIES.register("tube_dual")
@dataclass(frozen=True)
class DualTubeMask:
    ratio: float = 0.9
    decoder_ratio: float = 0.5  # of all tokens, not reconstructed by the decoder

    def __call__(self, grid_size: tuple[int, int, int], gen: random.Random) -> dict[str, torch.Tensor]:
        grid_size = tuple(grid_size) if len(grid_size) == 3 else (1, *grid_size)  # a frame: a tube one step deep
        out = TubeMask(self.ratio)(grid_size, gen)
        depth, rows, columns = grid_size
        total = depth * rows * columns
        masked = out["masked"].tolist()
        count = min(len(masked), max(1, int(round((1 - self.decoder_ratio) * total))))
        priority = [(0 if running_cell(i // (rows * columns), (i // columns) % rows, i % columns) else 1,
                     gen.random(), i) for i in masked]
        out["decoded"] = torch.tensor(sorted(i for _, _, i in sorted(priority)[:count]), dtype=torch.int64)
        return out


__all__ = ["DualTubeMask", "running_cell"]
