"""Patch masks for masked and predictive methods, drawn per sample in the data workers.

Each strategy is a small frozen dataclass called as ``strategy(grid_size, gen) -> dict of tensors`` for one
sample, where ``grid_size`` is the (rows, columns) patch grid of the view and ``gen`` a ``random.Random``
seeded by (run seed, epoch, sample index, view) (:func:`draw_masks`), so masks, like crops, do not depend on
the number of workers or ranks, or on a resume in the middle of an epoch. Patches are numbered row-major
(``r * columns + c``), the token order of :class:`~selfsup.backbones.vit.ViTBackbone`.

Every strategy returns the SAME shapes for every sample of a given grid, so a batch stacks into rectangular
tensors and a ViT can drop tokens without padding. Index tensors are sorted.

Strategies (registered in :data:`MASK_STRATEGIES`):

- ``random`` (:class:`RandomMask`): a uniformly random ``ratio`` of the patches, as in MAE (He et al., "Masked
  Autoencoders Are Scalable Vision Learners", CVPR 2022). ``unit=k`` masks k x k squares of patches instead,
  SimMIM's larger mask patches (Xie et al., "SimMIM", CVPR 2022: 32 px mask patches over 16 px tokens).
  Returns ``mask`` (N,) bool, ``masked`` (n,) and ``visible`` (N - n,) long.
- ``block`` (:class:`BlockMask`): rectangles of random area and aspect until ``ratio`` is reached, as in
  BEiT (Bao et al., "BEiT: BERT Pre-Training of Image Transformers", ICLR 2022) and iBOT. Same keys.
- ``cube`` (:class:`CubeMask`) and ``tube`` (:class:`TubeMask`), for volumes (a (depth, rows, columns) grid,
  ``MaskSpec.dims=3``, patches numbered ``(z * rows + r) * columns + c``): ``cube`` masks a uniformly random
  ``ratio`` of the 3-D patches, MAE's mask in 3-D; ``tube`` masks a random ``ratio`` of the (row, column)
  positions through the whole depth, VideoMAE's tube masking with depth in the place of time (Tong et al.,
  "VideoMAE: Masked Autoencoders are Data-Efficient Learners for Self-Supervised Video Pre-Training",
  NeurIPS 2022), so that a hidden patch cannot be copied from its neighbours in depth. Same keys as ``random``.
- ``multiblock`` (:class:`MultiBlockMask`): I-JEPA's context and targets (Assran et al., "Self-Supervised
  Learning from Images with a Joint-Embedding Predictive Architecture", CVPR 2023). Returns ``context``
  (K_c,) long and ``targets`` (M, K_t) long; no context patch is a target patch.

A new strategy (ColorMAE-style filtered-noise masks, a curriculum, ...) is one file: a frozen dataclass with
``__call__(grid_size, gen) -> dict[str, Tensor]`` of fixed shapes, registered with
``@MASK_STRATEGIES.register("name")``. Masks that depend on the model (loss-guided hard-patch mining) cannot be
drawn in the workers; such a method draws its candidates here (e.g. ``random`` with a lower ratio) and
completes them in its forward.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import torch

from selfsup.registry import Registry
from selfsup.views.augment import sample_generator

Grid = tuple[int, int]
# Added to the sample generator's salt for mask draws: masks get their own stream, so adding masks to a
# ViewSpec leaves the crops it draws unchanged.
MASK_SALT = 0x6D61736B


@runtime_checkable
class MaskStrategy(Protocol):
    def __call__(self, grid_size: Grid, gen: random.Random) -> dict[str, torch.Tensor]:
        """The masks of one sample for a (rows, columns) patch grid; fixed shapes for a given grid."""
        ...


MASK_STRATEGIES: Registry[Callable[..., MaskStrategy]] = Registry("mask strategy", plural="mask strategies")


def build_mask_strategy(name: str, **options: Any) -> MaskStrategy:
    return MASK_STRATEGIES.get(name)(**options)


# ------------------------------------------------------------------------------------------- helpers
def _masked_count(ratio: float, num_patches: int) -> int:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    return min(int(round(ratio * num_patches)), num_patches - 1)  # at least one visible patch


def _long(values) -> torch.Tensor:
    # Through numpy: torch.tensor(list) costs several times more, per sample, than drawing the mask.
    return torch.from_numpy(np.array(values, dtype=np.int64))


def _mask_output(masked: set[int] | list[int], num_patches: int) -> dict[str, torch.Tensor]:
    mask = np.zeros(num_patches, dtype=bool)
    mask[list(masked)] = True
    return {"mask": torch.from_numpy(mask), "masked": torch.from_numpy(np.flatnonzero(mask)),
            "visible": torch.from_numpy(np.flatnonzero(~mask))}


def _block_indices(top: int, left: int, h: int, w: int, columns: int) -> list[int]:
    """Patch indices of a rectangle, row-major."""
    return [r * columns + c for r in range(top, top + h) for c in range(left, left + w)]


def _neighbours(index: int, grid_size: Grid) -> list[int]:
    rows, columns = grid_size
    r, c = divmod(index, columns)
    return [nr * columns + nc for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
            if 0 <= nr < rows and 0 <= nc < columns]


def _block_shape(area: float, aspect: float, grid_size: Grid) -> tuple[int, int]:
    """(h, w) of a rectangle of about ``area`` patches with width / height = ``aspect``, inside the grid."""
    h = min(max(1, int(round(math.sqrt(area / aspect)))), grid_size[0])
    w = min(max(1, int(round(math.sqrt(area * aspect)))), grid_size[1])
    return h, w


def _log_uniform(bounds: tuple[float, float], gen: random.Random) -> float:
    return math.exp(gen.uniform(math.log(bounds[0]), math.log(bounds[1])))


# ------------------------------------------------------------------------------------------ strategies
@MASK_STRATEGIES.register("random")
@dataclass(frozen=True)
class RandomMask:
    """``round(ratio * N)`` patches chosen uniformly (MAE); with ``unit=k``, whole k x k squares of patches
    (SimMIM's mask patches), so the count is ``round(ratio * units) * k * k``."""

    ratio: float = 0.75
    unit: int = 1

    def __call__(self, grid_size: Grid, gen: random.Random) -> dict[str, torch.Tensor]:
        rows, columns = grid_size
        if rows % self.unit or columns % self.unit:
            raise ValueError(f"a {rows}x{columns} patch grid is not divisible into {self.unit}x{self.unit} mask units")
        unit_columns = columns // self.unit
        units = (rows // self.unit) * unit_columns
        chosen = gen.sample(range(units), _masked_count(self.ratio, units))
        if self.unit == 1:
            return _mask_output(chosen, rows * columns)
        masked = []
        for u in chosen:
            r, c = divmod(u, unit_columns)
            masked += _block_indices(r * self.unit, c * self.unit, self.unit, self.unit, columns)
        return _mask_output(masked, rows * columns)


@MASK_STRATEGIES.register("block")
@dataclass(frozen=True)
class BlockMask:
    """Block-wise masking (BEiT): rectangles of ``min_block``..``max_block`` patches and width / height in
    ``aspect`` (log-uniform) are added while they fit in the remaining budget; if 10 draws in a row add
    nothing, the mask is completed with random unmasked patches next to masked ones (then anywhere), so
    exactly ``round(ratio * N)`` patches are masked. BEiT uses min_block=16 on a 14x14 grid; 4 suits 8x8."""

    ratio: float = 0.4
    min_block: int = 4
    max_block: int | None = None
    aspect: tuple[float, float] = (0.3, 1 / 0.3)

    def __call__(self, grid_size: Grid, gen: random.Random) -> dict[str, torch.Tensor]:
        rows, columns = grid_size
        num_patches = rows * columns
        target = _masked_count(self.ratio, num_patches)
        masked: set[int] = set()
        failures = 0
        while len(masked) < target and failures < 10:
            budget = target - len(masked)
            largest = min(budget, self.max_block or num_patches)
            h, w = _block_shape(gen.uniform(min(self.min_block, largest), largest), _log_uniform(self.aspect, gen),
                                grid_size)
            block = _block_indices(gen.randint(0, rows - h), gen.randint(0, columns - w), h, w, columns)
            added = set(block) - masked
            if 0 < len(added) <= budget:  # never overshoot: trimming would punch holes into a block
                masked |= added
                failures = 0
            else:
                failures += 1
        return _mask_output(_top_up(masked, target, grid_size, gen), num_patches)


def _top_up(masked: set[int], target: int, grid_size: Grid, gen: random.Random) -> set[int]:
    """Grow ``masked`` to ``target`` patches, preferring patches that touch the mask (blocks stay blocks)."""
    masked = set(masked)
    num_patches = grid_size[0] * grid_size[1]
    while len(masked) < target:
        border = sorted({n for i in masked for n in _neighbours(i, grid_size)} - masked)
        masked.add(gen.choice(border) if border else gen.choice(sorted(set(range(num_patches)) - masked)))
    return masked


@MASK_STRATEGIES.register("multiblock")
@dataclass(frozen=True)
class MultiBlockMask:
    """I-JEPA's masks: ``num_targets`` target blocks and one context block from which the targets are removed.

    Fixed counts per sample, so no batch-level trimming is needed (I-JEPA trims every sample to the batch's
    smallest count, which a worker cannot know):

    - each target has ``target_tokens`` patches (default ``floor(target_scale[0] * N)``, the smallest
      block the scale range allows): its rectangle is grown if rounding made it smaller, then cut to its first
      ``target_tokens`` patches in row-major order (whole rows and a partial last row, I-JEPA's own trim);
    - the context has ``context_tokens`` patches (default ``N - num_targets * target_tokens``, the most that
      is always available whatever the targets' overlap): a random subset of the context block when it has
      more, padded with random non-target patches from outside the block when it has fewer.
    """

    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    context_aspect: tuple[float, float] = (1.0, 1.0)
    target_tokens: int | None = None
    context_tokens: int | None = None

    def counts(self, grid_size: Grid) -> tuple[int, int]:
        """(patches per target, context patches) for this grid."""
        num_patches = grid_size[0] * grid_size[1]
        per_target = self.target_tokens or max(1, int(self.target_scale[0] * num_patches))
        available = num_patches - self.num_targets * per_target
        context = self.context_tokens or available
        if per_target > num_patches or not 0 < context <= available:
            raise ValueError(
                f"multiblock mask on a {grid_size[0]}x{grid_size[1]} grid: {self.num_targets} targets of {per_target} "
                f"patches leave {available} patches that are surely not targets, so context_tokens must be in "
                f"[1, {available}] (got {context}); use fewer or smaller targets")
        return per_target, context

    def _block(self, scale: tuple[float, float], aspect: tuple[float, float], min_tokens: int,
               grid_size: Grid, gen: random.Random) -> list[int]:
        rows, columns = grid_size
        h, w = _block_shape(gen.uniform(*scale) * rows * columns, _log_uniform(aspect, gen), grid_size)
        while h * w < min_tokens:  # grow the side that is relatively shorter
            if w == columns or (h < rows and h / rows <= w / columns):
                h += 1
            else:
                w += 1
        return _block_indices(gen.randint(0, rows - h), gen.randint(0, columns - w), h, w, columns)

    def __call__(self, grid_size: Grid, gen: random.Random) -> dict[str, torch.Tensor]:
        per_target, context_count = self.counts(grid_size)
        targets = [self._block(self.target_scale, self.target_aspect, per_target, grid_size, gen)[:per_target]
                   for _ in range(self.num_targets)]
        in_targets = {i for t in targets for i in t}
        block = [i for i in self._block(self.context_scale, self.context_aspect, 1, grid_size, gen)
                 if i not in in_targets]
        if len(block) >= context_count:
            context = gen.sample(block, context_count)
        else:
            outside = sorted(set(range(grid_size[0] * grid_size[1])) - in_targets - set(block))
            context = block + gen.sample(outside, context_count - len(block))
        return {"context": _long(sorted(context)), "targets": _long(targets)}


@MASK_STRATEGIES.register("cube")
@dataclass(frozen=True)
class CubeMask:
    """``round(ratio * N)`` of the N patches of a 3-D (depth, rows, columns) grid, chosen uniformly."""

    ratio: float = 0.75

    def __call__(self, grid_size: tuple[int, int, int], gen: random.Random) -> dict[str, torch.Tensor]:
        num_patches = math.prod(_grid_3d(grid_size, "cube"))
        return _mask_output(gen.sample(range(num_patches), _masked_count(self.ratio, num_patches)), num_patches)


@MASK_STRATEGIES.register("tube")
@dataclass(frozen=True)
class TubeMask:
    """``round(ratio * rows * columns)`` (row, column) positions, chosen uniformly and masked at every depth."""

    ratio: float = 0.75

    def __call__(self, grid_size: tuple[int, int, int], gen: random.Random) -> dict[str, torch.Tensor]:
        depth, rows, columns = _grid_3d(grid_size, "tube")
        plane = rows * columns
        chosen = gen.sample(range(plane), _masked_count(self.ratio, plane))
        return _mask_output([z * plane + i for z in range(depth) for i in chosen], depth * plane)


def _grid_3d(grid_size, name: str) -> tuple[int, int, int]:
    if len(grid_size) != 3:
        raise ValueError(f"the {name} mask is for volumes (a 3-D patch grid, MaskSpec.dims=3), got the grid "
                         f"{tuple(grid_size)}")
    return tuple(int(g) for g in grid_size)


# --------------------------------------------------------------------------------------- per sample
def draw_masks(spec, view_sizes: list[int], seed: int, epoch: int, index: int) -> dict[str, torch.Tensor]:
    """The masks of one sample as ``spec`` (a :class:`~selfsup.views.spec.MaskSpec`) asks, for views of these
    sizes: each masked view gets its own generator (seed, epoch, index, view), hence its own mask.

    ``spec.views`` an int: the tensors of that view; a tuple: each key stacked over those views (dim 0).
    """
    single = isinstance(spec.views, int)
    per_view = []
    for v in ((spec.views,) if single else spec.views):
        grid = (view_sizes[v] // spec.patch_size,) * spec.dims
        per_view.append(spec.strategy(grid, sample_generator(seed, epoch, index, salt=MASK_SALT + v)))
    if single:
        return per_view[0]
    return {key: torch.stack([m[key] for m in per_view]) for key in per_view[0]}


def check_mask_spec(spec, view_sizes: list[int]) -> None:
    """Fail early, in the main process and with a clear message, on a MaskSpec that cannot be drawn."""
    views = (spec.views,) if isinstance(spec.views, int) else tuple(spec.views)
    if not views:
        raise ValueError("MaskSpec.views is empty: name the view(s) to mask")
    for v in views:
        if not 0 <= v < len(view_sizes):
            raise ValueError(f"MaskSpec.views names view {v}, but the ViewSpec has {len(view_sizes)} views")
        if view_sizes[v] % spec.patch_size:
            raise ValueError(f"view {v} is {view_sizes[v]} px, not a multiple of the mask patch size {spec.patch_size}")
    if not isinstance(spec.strategy, MaskStrategy):
        raise TypeError(f"MaskSpec.strategy must be callable as strategy(grid_size, gen), got {spec.strategy!r}")
    draw_masks(spec, view_sizes, seed=0, epoch=0, index=0)  # bad strategy options raise here, not in a worker


from selfsup.views import mask_shapes  # noqa: E402,F401 - registers colormae and gmml (a module of its own: length)

__all__ = [
    "MASK_STRATEGIES",
    "BlockMask",
    "CubeMask",
    "MaskStrategy",
    "MultiBlockMask",
    "RandomMask",
    "TubeMask",
    "build_mask_strategy",
    "check_mask_spec",
    "draw_masks",
]
