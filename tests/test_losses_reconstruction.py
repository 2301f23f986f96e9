"""Reconstruction losses (MAE's masked_patch_mse, SimMIM's masked_pixel_l1) against independent references written
with explicit loops in float64, with the edge cases: one masked patch, all but one masked, no masked patch, bf16
inputs; and the gradients (masked elements only, nothing into the target)."""
import math

import pytest
import torch

from selfsup.losses import masked_patch_mse, masked_pixel_l1


def masked_patch_mse_by_loops(pred, target, mask, normalize, eps=1e-6):
    b, n, d = pred.shape
    total, count = 0.0, 0
    for i in range(b):
        for j in range(n):
            if not bool(mask[i, j]):
                continue
            t = [float(v) for v in target[i, j].double()]
            if normalize:
                mean = sum(t) / d
                var = sum((v - mean) ** 2 for v in t) / (d - 1)  # unbiased
                t = [(v - mean) / math.sqrt(var + eps) for v in t]
            total += sum((float(p) - v) ** 2 for p, v in zip(pred[i, j].double(), t)) / d
            count += 1
    return total / count if count else 0.0


def masked_pixel_l1_by_loops(pred, target, mask):
    b, c, h, w = pred.shape
    total, count = 0.0, 0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                if bool(mask[i, 0, y, x]):
                    count += 1
                    total += sum(abs(float(pred[i, k, y, x]) - float(target[i, k, y, x])) for k in range(c))
    return total / (count * c) if count else 0.0


def _data(b=3, n=6, d=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=gen), 3 * torch.randn(b, n, d, generator=gen) + 1


def _masks(b, n):
    gen = torch.Generator().manual_seed(1)
    random = torch.rand(b, n, generator=gen) < 0.6
    random[:, 0] = True
    one = torch.zeros(b, n, dtype=torch.bool)
    one[0, 3] = True
    all_but_one = torch.ones(b, n, dtype=torch.bool)
    all_but_one[:, 2] = False
    return {"random": random, "one_masked_patch": one, "all_but_one_per_sample": all_but_one}


# ------------------------------------------------------------------------------------------------- MAE loss
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("which", ["random", "one_masked_patch", "all_but_one_per_sample"])
def test_masked_patch_mse_matches_loops(normalize, which):
    pred, target = _data()
    mask = _masks(*pred.shape[:2])[which]
    got = masked_patch_mse(pred, target, mask, normalize_target=normalize)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(masked_patch_mse_by_loops(pred, target, mask, normalize), rel=1e-5)


def test_masked_patch_mse_bf16_inputs_are_computed_in_float32():
    pred, target = _data(seed=2)
    mask = _masks(*pred.shape[:2])["random"]
    pred16, target16 = pred.bfloat16(), target.bfloat16()
    got = masked_patch_mse(pred16, target16, mask)
    assert got.dtype == torch.float32
    # the reference sees exactly the bf16 values; the loss adds only float32 rounding
    assert got.item() == pytest.approx(masked_patch_mse_by_loops(pred16, target16, mask, True), rel=1e-5)


def test_masked_patch_mse_gradient_reaches_masked_patches_only():
    pred, target = _data()
    pred.requires_grad_(True)
    target.requires_grad_(True)
    mask = _masks(*pred.shape[:2])["random"]
    masked_patch_mse(pred, target, mask, normalize_target=False).backward()
    assert target.grad is None  # the target is a constant
    expected = 2 * (pred.detach() - target.detach()) / (pred.shape[-1] * mask.sum()) * mask.unsqueeze(-1)
    assert torch.allclose(pred.grad, expected, atol=1e-7)


def test_masked_patch_mse_normalized_target_ignores_patch_brightness_and_contrast():
    pred, target = _data()
    mask = _masks(*pred.shape[:2])["random"]
    shifted = target * 5.0 + 7.0  # every patch: same structure, other mean and variance
    a = masked_patch_mse(pred, target, mask)
    b = masked_patch_mse(pred, shifted, mask)
    assert a.item() == pytest.approx(b.item(), rel=1e-4)
    assert masked_patch_mse(pred, shifted, mask, normalize_target=False) > a


def test_masked_patch_mse_without_masked_patches_is_zero_not_nan():
    pred, target = _data()
    pred.requires_grad_(True)
    loss = masked_patch_mse(pred, target, torch.zeros(pred.shape[:2], dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(pred.grad == 0)


def test_masked_patch_mse_refuses_wrong_shapes():
    pred, target = _data()
    with pytest.raises(ValueError, match="masked_patch_mse"):
        masked_patch_mse(pred, target[:, :-1], torch.ones(pred.shape[:2], dtype=torch.bool))
    with pytest.raises(ValueError, match="masked_patch_mse"):
        masked_patch_mse(pred, target, torch.ones(pred.shape[0], pred.shape[1] + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least 2"):
        masked_patch_mse(pred[..., :1], target[..., :1], torch.ones(pred.shape[:2], dtype=torch.bool))


# ----------------------------------------------------------------------------------------------- SimMIM loss
def _images(seed=0, b=2, c=3, h=4, w=6):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=gen), torch.randn(b, c, h, w, generator=gen)


def _pixel_masks(b=2, h=4, w=6):
    gen = torch.Generator().manual_seed(3)
    random = torch.rand(b, 1, h, w, generator=gen) < 0.5
    random[:, :, 0, 0] = True
    one = torch.zeros(b, 1, h, w, dtype=torch.bool)
    one[1, 0, 2, 3] = True
    all_but_one = torch.ones(b, 1, h, w, dtype=torch.bool)
    all_but_one[:, :, 1, 1] = False
    return {"random": random, "one_masked_pixel": one, "all_but_one_per_image": all_but_one}


@pytest.mark.parametrize("which", ["random", "one_masked_pixel", "all_but_one_per_image"])
def test_masked_pixel_l1_matches_loops(which):
    pred, target = _images()
    mask = _pixel_masks()[which]
    expected = masked_pixel_l1_by_loops(pred, target, mask)
    assert masked_pixel_l1(pred, target, mask).item() == pytest.approx(expected, rel=1e-6)
    assert masked_pixel_l1(pred, target, mask[:, 0]).item() == pytest.approx(expected, rel=1e-6)  # (B, H, W) too


def test_masked_pixel_l1_bf16_inputs_are_computed_in_float32():
    pred, target = _images(seed=4)
    mask = _pixel_masks()["random"]
    got = masked_pixel_l1(pred.bfloat16(), target.bfloat16(), mask)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(masked_pixel_l1_by_loops(pred.bfloat16(), target.bfloat16(), mask), rel=1e-5)


def test_masked_pixel_l1_gradient_reaches_masked_pixels_only():
    pred, target = _images()
    pred.requires_grad_(True)
    mask = _pixel_masks()["random"]
    masked_pixel_l1(pred, target, mask).backward()
    expected = torch.sign(pred.detach() - target) * mask / (mask.sum() * pred.shape[1])
    assert torch.allclose(pred.grad, expected, atol=1e-7)


def test_masked_pixel_l1_without_masked_pixels_is_zero_and_refuses_wrong_shapes():
    pred, target = _images()
    assert masked_pixel_l1(pred, target, torch.zeros(2, 1, 4, 6, dtype=torch.bool)).item() == 0.0
    with pytest.raises(ValueError, match="masked_pixel_l1"):
        masked_pixel_l1(pred, target, torch.ones(2, 3, 4, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="masked_pixel_l1"):
        masked_pixel_l1(pred, target[:, :2], torch.ones(2, 1, 4, 6, dtype=torch.bool))
