"""Patch masks: exact counts, block shapes, I-JEPA context/target disjointness, reproducibility from the seed,
and delivery by the loader as batch["masks"]."""
from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import torch

from selfsup.views.dataset import EpochBatchSampler, ViewCollate, ViewDataset
from selfsup.views import (MASK_STRATEGIES, BlockMask, CropSpec, MaskSpec, MaskStrategy, MultiBlockMask, RandomMask,
                           ViewSpec, build_mask_strategy)
from selfsup.views.masks import draw_masks
from selfsup.views.preprocess import Preprocess

GRIDS = [(8, 8), (14, 14), (6, 10)]


def _draws(strategy, grid, n=200, seed=0):
    gen = random.Random(seed)
    return [strategy(grid, gen) for _ in range(n)]


def _check_patch_mask(out: dict, num_patches: int, count: int) -> None:
    mask, masked, visible = out["mask"], out["masked"], out["visible"]
    assert mask.dtype == torch.bool and mask.shape == (num_patches,)
    assert masked.dtype == visible.dtype == torch.long
    assert masked.shape == (count,) and visible.shape == (num_patches - count,)
    assert int(mask.sum()) == count
    assert torch.equal(mask.nonzero().flatten(), masked) and torch.equal((~mask).nonzero().flatten(), visible)


def _masked_neighbour_fraction(mask: torch.Tensor, grid) -> float:
    """Among the 4-neighbours of masked patches, the fraction that are masked: high for blocks."""
    m = mask.view(*grid).float()
    neighbours = torch.zeros_like(m)
    neighbours[1:] += m[:-1]
    neighbours[:-1] += m[1:]
    neighbours[:, 1:] += m[:, :-1]
    neighbours[:, :-1] += m[:, 1:]
    degree = torch.zeros_like(m)
    degree[1:] += 1
    degree[:-1] += 1
    degree[:, 1:] += 1
    degree[:, :-1] += 1
    return float((neighbours * m).sum() / (degree * m).sum())


# ------------------------------------------------------------------------------------------- random
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("ratio", [0.0, 0.4, 0.75, 0.9])
def test_random_mask_exact_count(grid, ratio):
    n = grid[0] * grid[1]
    for out in _draws(RandomMask(ratio=ratio), grid, n=50):
        _check_patch_mask(out, n, round(ratio * n))


def test_random_mask_is_uniform():
    counts = torch.zeros(64)
    for out in _draws(RandomMask(0.75), (8, 8), n=2000):
        counts += out["mask"].float()
    assert ((counts / 2000 - 0.75).abs() < 0.06).all()


def test_random_mask_units_are_whole_squares():
    for out in _draws(RandomMask(ratio=0.6, unit=2), (8, 8), n=50):
        _check_patch_mask(out, 64, round(0.6 * 16) * 4)
        squares = out["mask"].view(4, 2, 4, 2).permute(0, 2, 1, 3).reshape(16, 4)
        assert (squares.all(1) | ~squares.any(1)).all()  # every 2x2 unit fully masked or fully visible
    with pytest.raises(ValueError, match="not divisible"):
        RandomMask(unit=3)((8, 8), random.Random(0))
    with pytest.raises(ValueError, match="ratio"):
        RandomMask(ratio=1.0)((8, 8), random.Random(0))


# -------------------------------------------------------------------------------------------- block
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("ratio", [0.1, 0.4, 0.6])
def test_block_mask_exact_count(grid, ratio):
    n = grid[0] * grid[1]
    for out in _draws(BlockMask(ratio=ratio), grid, n=50):
        _check_patch_mask(out, n, round(ratio * n))


def test_block_shapes():
    # one block exactly fills the budget: a 2x2 square, or a 1x4 strip for aspect (width / height) 4
    for aspect, shape in (((1.0, 1.0), (2, 2)), ((4.0, 4.0), (1, 4)), ((0.25, 0.25), (4, 1))):
        for out in _draws(BlockMask(ratio=4 / 64, min_block=4, aspect=aspect), (8, 8), n=30):
            rows, cols = out["masked"] // 8, out["masked"] % 8
            assert (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1) == shape
    # blocks are spatially clustered, random masks are not
    block = sum(_masked_neighbour_fraction(o["mask"], (14, 14)) for o in _draws(BlockMask(0.4), (14, 14), 100)) / 100
    rand = sum(_masked_neighbour_fraction(o["mask"], (14, 14)) for o in _draws(RandomMask(0.4), (14, 14), 100)) / 100
    assert rand < 0.45 < 0.7 < block


def test_block_mask_respects_max_block():
    out = BlockMask(ratio=0.5, min_block=1, max_block=1)((8, 8), random.Random(0))
    _check_patch_mask(out, 64, 32)  # single patches only: still exactly the count


# --------------------------------------------------------------------------------------- multiblock
def _is_row_major_prefix_of_rectangle(indices: list[int], columns: int) -> bool:
    rows = [i // columns for i in indices]
    cols = [i % columns for i in indices]
    top, left, right = min(rows), min(cols), max(cols)
    width = right - left + 1
    expected = [(top + k // width) * columns + left + k % width for k in range(len(indices))]
    return indices == expected


@pytest.mark.parametrize("grid", GRIDS)
def test_multiblock_counts_disjointness_and_shapes(grid):
    strategy = MultiBlockMask()
    n = grid[0] * grid[1]
    per_target, context_count = strategy.counts(grid)
    assert per_target == int(0.15 * n) and context_count == n - 4 * per_target
    for out in _draws(strategy, grid, n=200):
        context, targets = out["context"], out["targets"]
        assert context.dtype == targets.dtype == torch.long
        assert context.shape == (context_count,) and targets.shape == (4, per_target)
        assert len(set(context.tolist())) == context_count and torch.equal(context, context.sort().values)
        assert 0 <= int(context.min()) and int(context.max()) < n and int(targets.max()) < n
        assert not set(context.tolist()) & set(targets.flatten().tolist())  # context never sees a target patch
        for target in targets.tolist():
            assert _is_row_major_prefix_of_rectangle(target, grid[1])


def test_multiblock_context_is_mostly_the_context_block():
    """With few small targets the context block (85-100% of the image) has room: the context is a subset
    of it, padded from outside only when the targets ate too much of it."""
    strategy = MultiBlockMask(num_targets=1, context_tokens=20)
    for out in _draws(strategy, (8, 8), n=50):
        assert out["context"].shape == (20,) and out["targets"].shape == (1, 9)


def test_multiblock_rejects_impossible_counts():
    with pytest.raises(ValueError, match="context_tokens must be in"):
        MultiBlockMask(context_tokens=40)((8, 8), random.Random(0))
    with pytest.raises(ValueError, match="fewer or smaller targets"):
        MultiBlockMask(num_targets=8, target_tokens=9)((8, 8), random.Random(0))
    out = MultiBlockMask(num_targets=2, target_tokens=6, context_tokens=30)((8, 8), random.Random(0))
    assert out["targets"].shape == (2, 6) and out["context"].shape == (30,)


# ---------------------------------------------------------------------------------- reproducibility
SPECS = {
    "random": MaskSpec(RandomMask(0.75), patch_size=4),
    "block": MaskSpec(BlockMask(0.4), patch_size=4),
    "multiblock": MaskSpec(MultiBlockMask(), patch_size=4),
}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", list(SPECS))
def test_masks_reproducible_from_seed_epoch_index(name):
    spec = SPECS[name]
    sizes = [32, 32]
    reference = draw_masks(spec, sizes, seed=3, epoch=1, index=7)
    assert _same(reference, draw_masks(spec, sizes, seed=3, epoch=1, index=7))
    for other in ((4, 1, 7), (3, 2, 7), (3, 1, 8)):  # seed, epoch, index: each changes the mask
        assert not _same(reference, draw_masks(spec, sizes, *other))
    draws = [draw_masks(spec, sizes, 0, 0, i) for i in range(20)]
    assert len({tuple(torch.cat([v.flatten() for v in d.values()]).tolist()) for d in draws}) == 20
    # two masked views get independent masks, and view 0's mask is the same as when it is masked alone
    both = draw_masks(MaskSpec(spec.strategy, 4, views=(0, 1)), sizes, 3, 1, 7)
    assert all(v.shape[0] == 2 for v in both.values())
    assert _same({k: v[0] for k, v in both.items()}, reference)
    assert not _same({k: v[0] for k, v in both.items()}, {k: v[1] for k, v in both.items()})


def test_registry_builds_by_name():
    assert {"random", "block", "multiblock"} <= set(MASK_STRATEGIES)
    assert build_mask_strategy("random", ratio=0.5) == RandomMask(ratio=0.5)
    assert isinstance(build_mask_strategy("multiblock"), MaskStrategy)
    with pytest.raises(ValueError, match="unknown mask strategy 'radnom'. Did you mean 'random'"):
        build_mask_strategy("radnom")
    with pytest.raises(ValueError, match="already registered"):
        MASK_STRATEGIES.register("random")(BlockMask)


# ------------------------------------------------------------------------------------------- loader
class ArraySource:
    def __init__(self, n=32, size=32):
        gen = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)

    def __len__(self):
        return len(self.images)

    def get_image(self, i):
        return self.images[i]


@dataclass(frozen=True)
class CheckerMask:
    """A new strategy in a few lines: mask every other patch, shifted by a random offset."""

    def __call__(self, grid_size, gen):
        offset = gen.randint(0, 1)
        mask = torch.tensor([(r + c + offset) % 2 == 0 for r in range(grid_size[0]) for c in range(grid_size[1])])
        return {"mask": mask, "visible": (~mask).nonzero().flatten()}


def _loader(views: ViewSpec, workers: int, batch=8, image_size=32):
    dataset = ViewDataset(ArraySource(), views, image_size, seed=5)
    return torch.utils.data.DataLoader(dataset, batch_sampler=EpochBatchSampler(32, batch, 5), num_workers=workers,
                                       collate_fn=ViewCollate(Preprocess(image_size, [0.5] * 3, [0.25] * 3)))


def test_loader_delivers_masks_independent_of_worker_count():
    crops = (CropSpec(count=2), CropSpec(count=2, size=16))
    masked = ViewSpec(crops=crops, masks=MaskSpec(MultiBlockMask(), patch_size=4, views=(0, 1)))
    batches = {w: list(_loader(masked, w)) for w in (0, 2)}
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(a["index"], b["index"]) and _same(a["masks"], b["masks"])
    first = batches[0][0]
    assert first["masks"]["context"].shape == (8, 2, 28) and first["masks"]["targets"].shape == (8, 2, 4, 9)
    # the masks are those of draw_masks for (seed, epoch, index): reproducible outside the loader
    i = int(first["index"][3])
    assert _same({k: v[3] for k, v in first["masks"].items()},
                 draw_masks(masked.masks, masked.view_sizes(32), seed=5, epoch=0, index=i))
    # adding masks does not change the views (masks have their own random stream), and no masks, no key
    plain = list(_loader(ViewSpec(crops=crops), 0))
    assert "masks" not in plain[0]
    for a, b in zip(plain, batches[0]):
        assert all(torch.equal(va, vb) for va, vb in zip(a["views"], b["views"]))


def test_loader_single_view_masks_and_a_custom_strategy():
    batch = next(iter(_loader(ViewSpec(masks=MaskSpec(RandomMask(0.75), patch_size=4)), 0)))
    assert batch["masks"]["visible"].shape == (8, 16) and batch["masks"]["mask"].shape == (8, 64)
    MASK_STRATEGIES.register("checker")(CheckerMask)
    try:
        spec = ViewSpec(masks=MaskSpec(build_mask_strategy("checker"), patch_size=8))
        batch = next(iter(_loader(spec, 0)))
        assert batch["masks"]["mask"].shape == (8, 16) and batch["masks"]["visible"].shape == (8, 8)
    finally:
        MASK_STRATEGIES.remove("checker")


def test_loader_rejects_masks_it_cannot_draw():
    with pytest.raises(ValueError, match="view 2"):
        ViewDataset(ArraySource(), ViewSpec(masks=MaskSpec(RandomMask(), 4, views=2)), 32, 0)
    with pytest.raises(ValueError, match="not a multiple of the mask patch size 5"):
        ViewDataset(ArraySource(), ViewSpec(masks=MaskSpec(RandomMask(), 5)), 32, 0)
    with pytest.raises(ValueError, match="context_tokens"):
        ViewDataset(ArraySource(), ViewSpec(masks=MaskSpec(MultiBlockMask(context_tokens=100), 4)), 32, 0)
    with pytest.raises(TypeError, match="strategy"):
        ViewDataset(ArraySource(), ViewSpec(masks=MaskSpec("random", 4)), 32, 0)
