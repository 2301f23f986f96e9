import random

import torch

from selfsup.views import CropSpec, ViewSpec, apply_photometric, make_view, sample_generator
from selfsup.views.augment import (NUM_PARAMS, P_BRIGHT, P_CONTRAST, P_GRAY, P_HUE, P_JITTER, P_ORDER, P_SAT,
                                   crop_box, gaussian_blur, grayscale, hue_rotation, photometric_params)
from selfsup.views.dataset import EpochBatchSampler, ViewCollate, ViewDataset
from selfsup.views.preprocess import Preprocess


class ArraySource:
    def __init__(self, n=64, size=32, channels=3):
        gen = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=gen)

    def __len__(self):
        return len(self.images)

    def get_image(self, i):
        return self.images[i]


def test_sample_generator_depends_on_seed_epoch_and_index():
    draws = {(s, e, i): sample_generator(s, e, i).random() for s in range(2) for e in range(2) for i in range(3)}
    assert len(set(draws.values())) == len(draws)
    assert sample_generator(3, 1, 7).random() == sample_generator(3, 1, 7).random()


def test_crop_box_respects_scale_and_ratio():
    gen = random.Random(0)
    areas = []
    for _ in range(2000):
        top, left, h, w = crop_box(64, 48, (0.2, 1.0), (3 / 4, 4 / 3), gen)
        assert 0 <= top and top + h <= 64 and 0 <= left and left + w <= 48
        areas.append(h * w / (64 * 48))
    assert 0.15 < min(areas) and max(areas) <= 1.0
    # same area distribution as torchvision's RandomResizedCrop (large crops are rejected by both)
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    reference = [h * w / (64 * 48) for _, _, h, w in
                 (RandomResizedCrop.get_params(torch.zeros(1, 64, 48), [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(2000))]
    assert abs(sum(areas) / len(areas) - sum(reference) / len(reference)) < 0.03


def test_make_view_shapes_and_determinism():
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    view_a, params_a = make_view(image, CropSpec(), 32, sample_generator(0, 0, 5))
    view_b, params_b = make_view(image, CropSpec(), 32, sample_generator(0, 0, 5))
    assert view_a.shape == (3, 32, 32) and params_a.shape == (NUM_PARAMS,)
    assert torch.equal(view_a, view_b) and torch.equal(params_a, params_b)
    assert 0 <= view_a.min() and view_a.max() <= 1


def test_identity_parameters_leave_images_unchanged():
    x = torch.rand(4, 3, 8, 8)
    params = torch.zeros(4, NUM_PARAMS)
    params[:, P_JITTER] = 1
    params[:, P_BRIGHT] = params[:, P_CONTRAST] = params[:, P_SAT] = 1
    params[:, P_ORDER] = torch.tensor([0.0, 1, 2, 3])
    assert torch.allclose(apply_photometric(x, params), x, atol=1e-6)


def test_brightness_and_grayscale_applied_per_sample():
    x = torch.full((2, 3, 4, 4), 0.5)
    x[:, 0] = 0.2
    params = torch.zeros(2, NUM_PARAMS)
    params[:, P_CONTRAST] = params[:, P_SAT] = 1
    params[:, P_ORDER] = torch.tensor([0.0, 1, 2, 3])
    params[0, P_JITTER], params[0, P_BRIGHT] = 1, 1.5
    params[1, P_GRAY] = 1
    out = apply_photometric(x, params)
    assert torch.allclose(out[0], (x[0] * 1.5).clamp(0, 1))
    expected_gray = 0.299 * 0.2 + 0.587 * 0.5 + 0.114 * 0.5
    assert torch.allclose(out[1], torch.full((3, 4, 4), expected_gray), atol=1e-6)


def test_hue_rotation_keeps_gray_and_full_turn_is_identity():
    gray = torch.full((1, 3, 4, 4), 0.4)
    assert torch.allclose(hue_rotation(gray, torch.tensor([0.3])), gray, atol=1e-5)
    x = torch.rand(3, 3, 4, 4) * 0.5 + 0.25
    assert torch.allclose(hue_rotation(x, torch.tensor([1.0, 1.0, 1.0])), x, atol=1e-5)
    assert not torch.allclose(hue_rotation(x, torch.tensor([0.25] * 3)), x, atol=1e-2)
    # hue does not change luma
    assert torch.allclose(grayscale(hue_rotation(x, torch.tensor([0.1] * 3))), grayscale(x), atol=2e-3)


def test_blur_preserves_mean_and_smooths():
    x = torch.rand(2, 3, 32, 32)
    y = gaussian_blur(x, torch.tensor([1.0, 2.0]))
    assert torch.allclose(y.mean(), x.mean(), atol=1e-2)
    assert y.std() < x.std()


def test_photometric_statistics_follow_the_spec():
    spec = CropSpec(jitter_p=0.8, grayscale_p=0.2)
    gen = random.Random(1)
    params = torch.stack([photometric_params(spec, gen) for _ in range(4000)])
    assert abs(params[:, P_JITTER].mean() - 0.8) < 0.03
    assert abs(params[:, P_GRAY].mean() - 0.2) < 0.03
    assert params[:, P_BRIGHT].min() >= 0.6 - 1e-6 and params[:, P_BRIGHT].max() <= 1.4 + 1e-6
    assert params[:, P_HUE].abs().max() <= 0.1 + 1e-6
    orders = params[:, P_ORDER]
    assert torch.equal(orders.sort(dim=1).values, torch.arange(4.0).expand(4000, 4))
    assert abs((orders[:, 0] == 0).float().mean() - 0.25) < 0.03  # each op first a quarter of the time


def test_grayscale_images_get_brightness_and_contrast_only():
    x = torch.rand(3, 1, 8, 8)
    gen = random.Random(0)
    params = torch.stack([photometric_params(CropSpec(jitter_p=1.0), gen) for _ in range(3)])
    out = apply_photometric(x, params)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_sampler_orders_are_seeded_sharded_and_resumable():
    full = list(EpochBatchSampler(100, 8, seed=3))
    assert len(full) == 12 and len({i for b in full for _, i in b}) == 96
    sampler = EpochBatchSampler(100, 8, seed=3)
    sampler.set_epoch(0, start_batch=5)
    assert list(sampler) == full[5:]
    sampler.set_epoch(1)
    assert list(sampler) != full
    rank0, rank1 = EpochBatchSampler(100, 4, 3, 0, 2), EpochBatchSampler(100, 4, 3, 1, 2)
    seen0 = {i for b in rank0 for _, i in b}
    seen1 = {i for b in rank1 for _, i in b}
    assert not seen0 & seen1 and len(seen0) == len(seen1) == 48


def test_views_do_not_depend_on_worker_count():
    source = ArraySource(32)
    dataset = ViewDataset(source, ViewSpec(crops=(CropSpec(count=2, blur_p=0.5),)), 16, seed=7)
    collate = ViewCollate(Preprocess(16, [0.5] * 3, [0.25] * 3))
    loaders = [torch.utils.data.DataLoader(dataset, batch_sampler=EpochBatchSampler(32, 8, 7), num_workers=w,
                                           collate_fn=collate) for w in (0, 2)]
    batches = [list(loader) for loader in loaders]
    for a, b in zip(*batches):
        assert torch.equal(a["index"], b["index"])
        for va, vb in zip(a["views"], b["views"]):
            assert torch.equal(va, vb)
    # the two views of a sample differ
    assert not torch.equal(batches[0][0]["views"][0], batches[0][0]["views"][1])


def test_data_hflip_defaults_to_the_data_and_reaches_every_view():
    """digits declare that flips change their labels: no view of any crop group flips unless data.hflip=true;
    arrays and folders keep the method's flips unless data.hflip=false."""
    import numpy as np

    from selfsup.config import build_config
    from selfsup.data import open_data
    from selfsup.data.sources import ArraySource
    from selfsup.runs import build_run_method

    digits = open_data("digits-plain").train
    arrays = ArraySource(np.zeros((4, 3, 8, 8), np.uint8), channels=3)

    def flips(recipe, source, *overrides):
        cfg = build_config(recipe, ["train.max_steps=1", *overrides])
        return {crop.flip_p for crop in build_run_method(cfg, source).views.crops}

    assert flips("dino", digits, "method_options.num_local_crops=2") == {0.0}  # multi-crop: both crop groups
    assert flips("demo", digits, "data.hflip=true") == {0.5}
    assert flips("demo", arrays) == {0.5}
    assert flips("demo", arrays, "data.hflip=false") == {0.0}
