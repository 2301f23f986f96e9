"""The mask strategies of selfsup.views.mask_shapes (colormae, gmml) and the mask option of MAE, SimMIM, iBOT and
HPM-MAE: exact counts, reproducibility, shapes, and a training step of MAE with each."""
import random

import numpy as np
import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.methods import build_method
from selfsup.methods.hpm_mae import hard_mask, relative_loss
from selfsup.views.masks import MASK_STRATEGIES, build_mask_strategy
from selfsup.views.mask_shapes import filtered_noise

NEW = {"colormae": [{"colour": c} for c in ("red", "blue", "green", "purple")], "gmml": [{}, {"group_size": (1, 3)}]}
CASES = [(name, options) for name, variants in NEW.items() for options in variants]


@pytest.mark.parametrize("name,options", CASES)
@pytest.mark.parametrize("grid,ratio", [((8, 8), 0.75), ((4, 6), 0.5), ((7, 7), 0.3)])
def test_exact_count_shapes_and_partition(name, options, grid, ratio):
    strategy = build_mask_strategy(name, ratio=ratio, **options)
    n = grid[0] * grid[1]
    count = min(round(ratio * n), n - 1)
    for seed in range(5):
        out = strategy(grid, random.Random(seed))
        assert out["mask"].shape == (n,) and out["mask"].dtype == torch.bool
        assert out["masked"].shape == (count,) and out["visible"].shape == (n - count,)
        assert int(out["mask"].sum()) == count
        assert torch.equal(torch.sort(torch.cat([out["masked"], out["visible"]])).values, torch.arange(n))
        assert torch.equal(out["masked"], out["mask"].nonzero().flatten())  # sorted indices


@pytest.mark.parametrize("name,options", CASES)
def test_the_same_generator_gives_the_same_mask_and_others_differ(name, options):
    strategy = build_mask_strategy(name, ratio=0.6, **options)
    first = strategy((8, 8), random.Random(7))["mask"]
    assert torch.equal(first, strategy((8, 8), random.Random(7))["mask"])
    others = [strategy((8, 8), random.Random(s))["mask"] for s in range(8, 14)]
    assert any(not torch.equal(first, o) for o in others)


def _neighbour_fraction(mask: torch.Tensor, grid) -> float:
    """Of the masked patches' 4-neighbours inside the grid, the fraction that are masked too."""
    m = mask.view(grid).numpy()
    same = total = 0
    for r, c in zip(*np.nonzero(m)):
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nr < grid[0] and 0 <= nc < grid[1]:
                total += 1
                same += m[nr, nc]
    return same / total


def test_noise_colour_shapes_the_mask_and_groups_are_connected():
    grid = (16, 16)
    clumping = {c: np.mean([_neighbour_fraction(build_mask_strategy("colormae", ratio=0.5, colour=c)(
        grid, random.Random(s))["mask"], grid) for s in range(10)]) for c in ("red", "blue")}
    assert clumping["red"] > 0.7 > 0.45 > clumping["blue"]  # low-pass noise: blobs; high-pass: scattered patches
    grouped = np.mean([_neighbour_fraction(build_mask_strategy("gmml", ratio=0.4)(grid, random.Random(s))["mask"], grid)
                       for s in range(10)])
    scattered = np.mean([_neighbour_fraction(build_mask_strategy("random", ratio=0.4)(grid, random.Random(s))["mask"],
                                             grid) for s in range(10)])
    assert grouped > scattered + 0.2
    noise = filtered_noise((8, 8), "green", 1.0, random.Random(0))
    assert noise.shape == (8, 8) and np.isfinite(noise).all()


def test_bad_options_fail_at_start():
    with pytest.raises(ValueError, match="colour"):
        build_mask_strategy("colormae", colour="pink")
    with pytest.raises(ValueError, match="group_size"):
        build_mask_strategy("gmml", group_size=(5, 2))


def _vit():
    torch.manual_seed(0)
    return build_backbone("vit_micro_cpu", 3, img_size=16, embed_dim=32, depth=1, num_heads=2)


def _batch(method, n=4):
    from selfsup.data.sources import ArraySource
    from method_utils import view_batch

    images = np.random.default_rng(0).integers(0, 255, (n, 3, 16, 16), dtype=np.uint8)
    return view_batch(method, ArraySource(images), n)


@pytest.mark.parametrize("mask", ["colormae", "gmml", "block", "random"])
def test_mae_trains_with_every_patch_mask_strategy(mask):
    method = build_method("mae", _vit(), {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, "mask": mask})
    assert type(method.views.masks.strategy) is MASK_STRATEGIES.get(mask)
    out = method(_batch(method))
    out.loss.backward()
    assert torch.isfinite(out.loss) and method.backbone.model.patch_embed.proj.weight.grad.abs().sum() > 0


def test_simmim_and_ibot_take_any_patch_mask_strategy_and_refuse_others():
    simmim = build_method("simmim", build_backbone("small_resnet", 3, widths=[8, 8, 16, 16]),
                          {"mask": "colormae", "mask_options": {"colour": "red"}})
    assert simmim.views.masks.strategy.colour == "red"
    assert torch.isfinite(simmim(_batch(simmim)).loss)
    from selfsup.methods import METHODS

    ibot = build_method("ibot", _vit(), {**METHODS["ibot"].test_options, "mask": "gmml"})
    assert type(ibot.views.masks.strategy).__name__ == "GroupMask"
    with pytest.raises(ValueError, match="not a patch mask"):
        build_method("mae", _vit(), {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, "mask": "multiblock"})
    with pytest.raises(Exception, match="Did you mean"):
        build_method("mae", _vit(), {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, "mask": "gmmml"})


def test_hpm_masks_the_predicted_hard_patches_first_and_keeps_the_count():
    random_mask = torch.zeros(2, 8, dtype=torch.bool)
    random_mask[:, :4] = True  # the workers' random mask: patches 0-3
    scores = torch.tensor([[0, 0, 0, 0, 0, 0, 5, 9.0], [9, 0, 0, 0, 0, 0, 0, 5.0]])
    mask = hard_mask(scores, random_mask, hard=2)
    assert mask.sum(1).tolist() == [4, 4]
    assert mask[0, 6] and mask[0, 7] and mask[1, 0] and mask[1, 7]  # the two hardest of each image
    assert torch.equal(hard_mask(scores, random_mask, hard=0), random_mask)
    errors = torch.tensor([[1.0, 2.0, 3.0]])
    assert relative_loss(torch.tensor([[0.0, 5.0, 10.0]]), errors) < relative_loss(torch.tensor([[10.0, 5.0, 0.0]]),
                                                                                  errors)
