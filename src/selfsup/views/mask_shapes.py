"""More patch-mask strategies (registered in :data:`selfsup.views.masks.MASK_STRATEGIES`, which imports this module):
masks from filtered random noise and masks of grouped, connected patches. Same contract as the strategies of
:mod:`selfsup.views.masks`: ``strategy(grid_size, gen) -> {"mask", "masked", "visible"}`` for one sample of a
(rows, columns) patch grid, exactly ``round(ratio * N)`` patches masked (at least one visible), drawn from the
sample's generator only.

- ``colormae`` (:class:`ColourNoiseMask`): ColorMAE (Hinojosa, Liu, Ghanem, "ColorMAE: Exploring data-independent
  masking strategies in Masked AutoEncoders", ECCV 2024). White noise on the patch grid is filtered and the patches
  with the highest filtered values are masked. The filter sets the noise's "colour", hence the mask's shape:
  ``red`` (low-pass: large smooth blobs), ``blue`` (high-pass: scattered, evenly spread patches), ``green``
  (band-pass: blobs of a middle size) and ``purple`` (band-stop: large blobs plus fine detail). The paper
  precomputes noise images and crops them; here the noise is drawn per sample and filtered in the Fourier domain
  with Gaussian transfer functions (periodic borders), so any grid works and the mask is a function of the
  sample's seed.
- ``gmml`` (:class:`GroupMask`): group masked model learning (Atito, Awais, Kittler, "SiT: Self-supervised vIsion
  Transformer", 2021, and "GMML is All you Need", 2022): the corruption is made of groups of connected patches,
  so a hidden patch seldom has a visible neighbour to copy from. Each group starts at a random unmasked patch and
  grows by random unmasked neighbours of the group to a size drawn from ``group_size``; groups are added until the
  count is reached (the last group stops at the budget). Irregular blobs, unlike the rectangles of ``block``.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from selfsup.views.masks import MASK_STRATEGIES, Grid, _mask_output, _masked_count, _neighbours, build_mask_strategy

NoiseColour = Literal["red", "blue", "green", "purple"]


def _lowpass(grid: Grid, sigma: float) -> np.ndarray:
    """Fourier transfer function of a Gaussian blur of ``sigma`` patches on a periodic (rows, columns) grid."""
    fy = np.fft.fftfreq(grid[0])[:, None]
    fx = np.fft.fftfreq(grid[1])[None, :]
    return np.exp(-2 * np.pi ** 2 * sigma ** 2 * (fy ** 2 + fx ** 2))


def filtered_noise(grid: Grid, colour: NoiseColour, sigma: float, gen: random.Random) -> np.ndarray:
    """(rows, columns) white noise from ``gen`` filtered to ``colour`` (see the module doc); ``sigma`` is the
    blur of the low-pass in patches (band filters pair it with a blur twice as wide)."""
    noise = np.random.default_rng(gen.getrandbits(63)).standard_normal(grid)
    low, lower = _lowpass(grid, sigma), _lowpass(grid, 2 * sigma)
    transfer = {"red": lower, "blue": 1 - low, "green": low - lower, "purple": 1 - (low - lower)}[colour]
    return np.fft.ifft2(np.fft.fft2(noise) * transfer).real


@MASK_STRATEGIES.register("colormae")
@dataclass(frozen=True)
class ColourNoiseMask:
    """The ``round(ratio * N)`` patches where filtered noise of ``colour`` is highest (ColorMAE)."""

    ratio: float = 0.75
    colour: NoiseColour = "green"
    sigma: float = 1.0  # patches

    def __post_init__(self):
        if self.colour not in ("red", "blue", "green", "purple"):
            raise ValueError(f"colormae: colour must be red, blue, green or purple, not {self.colour!r}")
        if self.sigma <= 0:
            raise ValueError(f"colormae: sigma must be positive (patches), not {self.sigma}")

    def __call__(self, grid_size: Grid, gen: random.Random) -> dict[str, torch.Tensor]:
        rows, columns = grid_size
        count = _masked_count(self.ratio, rows * columns)
        values = filtered_noise((rows, columns), self.colour, self.sigma, gen).reshape(-1)
        order = np.argsort(-values, kind="stable")  # highest first; ties (never in practice) by index
        return _mask_output(order[:count].tolist(), rows * columns)


@MASK_STRATEGIES.register("gmml")
@dataclass(frozen=True)
class GroupMask:
    """Groups of connected patches, each of ``group_size`` patches (uniform, inclusive), until ``round(ratio * N)``
    are masked (GMML)."""

    ratio: float = 0.6
    group_size: tuple[int, int] = (4, 12)

    def __post_init__(self):
        low, high = self.group_size
        if not 1 <= low <= high:
            raise ValueError(f"gmml: group_size must be (low, high) with 1 <= low <= high, got {self.group_size}")

    def __call__(self, grid_size: Grid, gen: random.Random) -> dict[str, torch.Tensor]:
        num_patches = grid_size[0] * grid_size[1]
        target = _masked_count(self.ratio, num_patches)
        masked: set[int] = set()
        while len(masked) < target:
            size = min(gen.randint(*self.group_size), target - len(masked))
            start = gen.choice(sorted(set(range(num_patches)) - masked))
            group, frontier = {start}, set(_neighbours(start, grid_size)) - masked
            while len(group) < size:
                candidates = sorted(frontier - group)
                if not candidates:  # walled in by earlier groups: the group ends small, the next one goes on
                    break
                patch = gen.choice(candidates)
                group.add(patch)
                frontier |= set(_neighbours(patch, grid_size)) - masked
            masked |= group
        return _mask_output(masked, num_patches)




def patch_mask_strategy(name: str, ratio: float, grid_size, method: str, **options):
    """The registered strategy ``name`` at ``ratio`` (plus its own ``options``) for a method that reads a patch mask
    (``mask`` / ``masked`` / ``visible``: MAE, SimMIM, iBOT and their kin); fails at start, naming the method
    option, for a strategy that gives other keys (``multiblock``) or does not take the options."""
    factory = MASK_STRATEGIES.get(name)  # an unknown name: the registry's message, with a "did you mean"
    if "ratio" not in {field.name for field in dataclasses.fields(factory)}:
        raise ValueError(f"{method}: the mask strategy '{name}' has no mask ratio: not a patch mask (mask, masked, "
                         "visible); choose one of the patch-mask strategies for method_options.mask")
    try:
        strategy = build_mask_strategy(name, ratio=ratio, **options)
        drawn = strategy(tuple(grid_size), random.Random(0))
    except TypeError as error:
        raise ValueError(f"{method}: method_options.mask_options {options} do not fit the mask strategy '{name}' "
                         f"({error})") from error
    if not {"mask", "visible", "masked"} <= set(drawn):
        raise ValueError(f"{method}: the mask strategy '{name}' gives {sorted(drawn)}, not a patch mask (mask, "
                         f"masked, visible); choose one of the patch-mask strategies for method_options.mask")
    return strategy


__all__ = ["ColourNoiseMask", "GroupMask", "filtered_noise", "patch_mask_strategy"]
