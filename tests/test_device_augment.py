"""``data.augment=device`` (views made on the training device, selfsup.views.device), ``data.augment=auto`` and
``data.cache`` (selfsup.data.cache), each checked against the plain path: the per-sample worker views and the
folder source that decodes files on demand."""
import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import selfsup
from selfsup.config import build_config
from selfsup.data import ArraySource, decode_image, open_data
from selfsup.data.cache import CachedSource, fit_square, open_cached
from selfsup.data.sources import FolderSource
from selfsup.dist import DistInfo
from selfsup.views.dataset import ViewCollate, ViewDataset, fixed_image_size
from selfsup.throughput import bench_trainer
from selfsup.views import CropSpec, ViewSpec, make_view, sample_generator
from selfsup.views.augment import draw_view_params
from selfsup.views.device import NUM_GEOMETRY, DeviceViews, ResizeRamp, crop_resize_flip
from selfsup.views.preprocess import Preprocess

TINY = ["data.source=digits-plain", "data.image_size=16", "data.num_workers=0", "train.batch_size=32",
        "train.max_steps=3", "train.budget=null", "train.progress=false", "train.log_every=1", "eval.enabled=false",
        "eval.report=false", "backbone.options={widths: [8, 16, 16, 32], stem_stride: 1}"]
TINY_SIMCLR = ["method_options.projector_hidden_dim=32", "method_options.projector_out_dim=16"]
TINY_DINO = ["method_options.out_dim=32", "method_options.hidden_dim=32", "method_options.bottleneck_dim=16",
             "method_options.num_local_crops=2", "method_options.local_size=8"]


def _views_both_ways(images: torch.Tensor, spec: CropSpec, size: int):
    """(worker views, device views, geometry rows) of one view per image, from the same per-sample generators."""
    reference, geometry = [], []
    for i, image in enumerate(images):
        reference.append(make_view(image, spec, size, sample_generator(3, 0, i))[0])
        geometry.append(draw_view_params(*image.shape[-2:], spec, sample_generator(3, 0, i)).row()[:NUM_GEOMETRY])
    geometry = torch.tensor(geometry)
    return torch.stack(reference), crop_resize_flip(images, geometry[:, None], size)[:, 0], geometry


def test_device_crop_equals_make_view_for_upscaling_crops():
    """Crops no larger than the view (32 px images, 32 px views): plain bilinear, no antialias on either side."""
    images = (torch.rand(256, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    reference, device, geometry = _views_both_ways(images, CropSpec(scale=(0.08, 1.0)), 32)
    assert (geometry[:, 2:4] <= 32).all() and 0.3 < geometry[:, 4].mean() < 0.7  # both flips occur
    assert (device - reference).abs().max() < 2 / 255
    assert (device - reference).abs().max() < 1e-4  # in fact equal up to float rounding


def test_device_crop_equals_make_view_for_downscaling_crops():
    """Crops larger than the view: make_view resizes with antialias (a triangle filter as wide as the downscale
    factor). The device weights reproduce that filter instead of taking one bilinear sample per output pixel
    (as grid_sample or roi_align would: on these noise images that differs from the antialiased view by 0.09
    on average and up to 0.55, in [0, 1] units), so the two paths still agree up to float rounding;
    non-square images and local crops included."""
    images = (torch.rand(128, 3, 64, 48, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    for spec, size in ((CropSpec(scale=(0.4, 1.0)), 24), (CropSpec(scale=(0.05, 0.4)), 12)):
        reference, device, geometry = _views_both_ways(images, spec, size)
        assert (geometry[:, 2:4] > size).any()
        assert (device - reference).abs().max() < 1e-4


def _recovered_boxes(views: torch.Tensor, size: int) -> torch.Tensor:
    """(height, width, flip) of each view's crop, read back from coordinate images (channel 0 holds x, channel
    1 holds y): away from the edges a view samples source coordinate start + (j + 0.5) * length / size - 0.5."""
    j = torch.arange(4, size - 4, dtype=torch.float64)
    def slope(profile):  # least-squares slope of the interior samples
        p = profile[:, 4:size - 4].double() * 255
        jc = j - j.mean()
        return ((p - p.mean(1, keepdim=True)) * jc).sum(1) / (jc * jc).sum()
    sx = slope(views[:, 0].mean(1))  # x along columns
    sy = slope(views[:, 1].mean(2))  # y along rows
    return torch.stack([sy.abs() * size, sx.abs() * size, (sx < 0).double()], 1)


def _spec_area_and_log_ratio(scale, ratio, side_fraction=1.0, n=400_000):
    """The RandomResizedCrop rule on a square image, simulated from its definition (numpy, independent of
    crop_box): area ~ U(scale), log aspect ~ U(log ratio), kept when the box fits."""
    rng = np.random.default_rng(0)
    area = rng.uniform(*scale, n)
    log_r = rng.uniform(np.log(ratio[0]), np.log(ratio[1]), n)
    fits = (area * np.exp(log_r) <= 1) & (area / np.exp(log_r) <= 1)
    return area[fits], log_r[fits]


def test_device_views_follow_the_crop_spec_and_match_worker_colour_statistics():
    side, size, n = 128, 32, 2000
    ramp = np.arange(side, dtype=np.uint8)
    coordinates = np.stack([np.broadcast_to(ramp, (side, side)), np.broadcast_to(ramp[:, None], (side, side)),
                            np.zeros((side, side), np.uint8)])
    source = ArraySource(np.broadcast_to(coordinates, (n, 3, side, side)))  # one image, no copies
    spec = CropSpec(count=2, scale=(0.2, 1.0), jitter_p=0.0, grayscale_p=0.0)
    dataset = ViewDataset(source, ViewSpec(crops=(spec,)), size, seed=11, augment="device")
    identity = Preprocess(size, mean=[0, 0, 0], std=[1, 1, 1])
    make, collate = DeviceViews(dataset.views, identity), ViewCollate(identity)
    views = [make(collate([dataset[(0, i)] for i in range(a, a + 250)]))["views"] for a in range(0, n, 250)]
    boxes = torch.cat([_recovered_boxes(v, size) for batch in views for v in batch]).numpy()
    area = boxes[:, 0] * boxes[:, 1] / side**2
    log_ratio = np.log(boxes[:, 1] / boxes[:, 0])
    spec_area, spec_log_ratio = _spec_area_and_log_ratio(spec.scale, spec.ratio)
    quantiles = [0.1, 0.25, 0.5, 0.75, 0.9]
    assert abs(area.mean() - spec_area.mean()) < 0.015
    assert np.abs(np.quantile(area, quantiles) - np.quantile(spec_area, quantiles)).max() < 0.03
    assert abs(log_ratio.mean() - spec_log_ratio.mean()) < 0.02
    assert np.abs(np.quantile(log_ratio, quantiles) - np.quantile(spec_log_ratio, quantiles)).max() < 0.04
    assert abs(boxes[:, 2].mean() - 0.5) < 0.04  # flips: 2 x 2000 views, standard error 0.008

    # Colour: the full SimCLR recipe on digits, device path against the worker path.
    digits = open_data("digits-plain").train
    views = ViewSpec(crops=(CropSpec(count=2, scale=(0.2, 1.0), blur_p=0.5, solarize_p=0.2),))
    on_workers = ViewDataset(digits, views, 32, seed=5)
    on_device = ViewDataset(digits, views, 32, seed=5, augment="device")
    preprocess = Preprocess(32, [0.5] * 3, [0.25] * 3)
    collate, make = ViewCollate(preprocess), DeviceViews(views, preprocess)
    stats = {"workers": [], "device": []}
    for a in range(0, 1000, 250):
        keys = [(0, i) for i in range(a, a + 250)]
        batches = {"workers": collate([on_workers[k] for k in keys]),
                   "device": make(collate([on_device[k] for k in keys]))}
        for path, batch in batches.items():
            x = torch.cat(batch["views"]).flatten(2)
            stats[path].append(torch.stack([x.mean(2), x.std(2)], 1))  # per image and channel
    workers, device = torch.cat(stats["workers"]), torch.cat(stats["device"])
    assert torch.allclose(device.mean(0), workers.mean(0), atol=0.01)
    assert torch.allclose(device.std(0), workers.std(0), atol=0.01)


def _losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_training_with_device_augment_matches_workers(tmp_path):
    runs = {mode: selfsup.train("demo", [*TINY, *TINY_SIMCLR, f"runs_dir={tmp_path}", f"name={mode}",
                                         f"data.augment={mode}", "train.precision=fp32"])  # bf16 rounds apart
            for mode in ("workers", "device")}
    workers, device = _losses(runs["workers"]), _losses(runs["device"])
    assert len(device) == 3 and all(np.isfinite(device))
    assert device[0] == pytest.approx(workers[0], abs=1e-4)


def test_multi_crop_dino_with_device_augment(tmp_path):
    runs = {mode: selfsup.train("dino", [*TINY, *TINY_DINO, f"runs_dir={tmp_path}", f"name={mode}",
                                         f"data.augment={mode}", "data.num_workers=1",  # a worker process too
                                         "train.precision=fp32"])  # auto's bf16 would round the two paths apart
            for mode in ("workers", "device")}
    workers, device = _losses(runs["workers"]), _losses(runs["device"])
    assert len(device) == 3 and all(np.isfinite(device))
    assert device[0] == pytest.approx(workers[0], abs=1e-4)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    root.mkdir()
    for i, (h, w) in enumerate([(40, 60), (50, 30), (24, 24), (64, 48)]):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(root / f"img{i}.png")
    Image.fromarray((rng.random((36, 52, 3)) * 255).astype(np.uint8)).save(root / "photo.jpg", quality=90)
    Image.fromarray((rng.random((30, 30)) * 255).astype(np.uint8)).save(root / "gray.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_decoded_cache_is_built_reused_and_equal_to_decoding(image_folder, tmp_path, monkeypatch):
    source = open_data(image_folder, max_bad_fraction=0.5).train
    assert isinstance(source, FolderSource) and len(source) == 6
    messages = []
    cached = open_cached(source, image_size=16, cache_size=None, runs_dir=tmp_path / "runs", log=messages.append)
    assert isinstance(cached, CachedSource) and tuple(cached.images.shape) == (6, 3, 20, 20)  # 1.25 x 16
    assert fixed_image_size(cached) == (20, 20)
    assert cached.bad_files == source.bad_files and [os.path.basename(p) for p, _ in cached.bad_files] == ["broken.jpg"]
    for i in range(len(source)):
        assert torch.equal(cached.get_image(i), fit_square(decode_image(source.path(i)), 20))
    u8 = next((tmp_path / "runs" / ".cache").glob("*.u8"))
    assert json.loads(u8.with_suffix(".json").read_text())["shape"] == [6, 3, 20, 20]
    mtime = u8.stat().st_mtime_ns

    def no_decoding(self, index):
        raise AssertionError("the cache was decoded again")

    monkeypatch.setattr(FolderSource, "get_image", no_decoding)
    again = open_cached(open_data(image_folder, max_bad_fraction=0.5).train, 16, None, tmp_path / "runs",
                        messages.append)
    assert u8.stat().st_mtime_ns == mtime and "reusing" in messages[-1]
    assert np.array_equal(again.images, cached.images) and again.bad_files == cached.bad_files
    clone = pickle.loads(pickle.dumps(again))  # as a spawned DataLoader worker receives it: the path, not the bytes
    assert len(pickle.dumps(again)) < again.images.nbytes and np.array_equal(clone.images, again.images)
    monkeypatch.undo()

    os.utime(image_folder / "img0.png", ns=(mtime, mtime + 10**9))  # a changed file: a new cache
    open_cached(open_data(image_folder, max_bad_fraction=0.5).train, 16, None, tmp_path / "runs", messages.append)
    assert len(list((tmp_path / "runs" / ".cache").glob("*.u8"))) == 2


def test_cached_folder_trains_on_device_and_uncached_folder_falls_back(image_folder, tmp_path, capsys):
    folder = [f"data.source={image_folder}", "data.max_bad_fraction=0.5", "data.augment=device",
              "train.batch_size=4", f"runs_dir={tmp_path}", *TINY_SIMCLR]
    tiny = [o for o in TINY if not o.startswith(("data.source", "train.batch_size"))]
    run = selfsup.train("demo", [*tiny, *folder, "data.cache=true", "name=cached"])
    assert len(_losses(run)) == 3
    assert "broken.jpg" in (run / "bad_files.txt").read_text()
    log = capsys.readouterr().err
    assert "data.cache: 6 images cached" in log and "differ in size" not in log  # views made on the device
    trainer = bench_trainer(build_config("demo", [*tiny, *folder]), DistInfo())
    assert trainer.data.augment == "workers"
    assert "differ in size" in capsys.readouterr().err


def test_auto_picks_a_path_and_logs_it(capsys):
    trainer = bench_trainer(build_config("demo", [*TINY, *TINY_SIMCLR, "data.augment=auto"]), DistInfo())
    assert trainer.data.augment in ("workers", "device")
    line = next(line for line in capsys.readouterr().err.splitlines() if "data.augment=auto" in line)
    assert f"using {trainer.data.augment}" in line and "ms per batch" in line
    assert trainer.step([next(iter(trainer.data.loader))])["loss"] > 0


def test_resize_ramp_grows_from_the_start_size_to_the_image_size():
    ramp = ResizeRamp(start_size=16, final_size=32, start=0.25, end=0.75, multiple=8)
    assert [ramp.size_at(p) for p in (0.0, 0.25, 0.3, 0.5, 0.7, 0.75, 1.0)] == [16, 16, 16, 24, 32, 32, 32]
    assert ramp.scaled(16, 0.0) == 8 and ramp.scaled(16, 1.0) == 16  # a small crop shrinks in proportion
    step = ResizeRamp(start_size=16, final_size=30, start=0.5, end=0.5, multiple=8)  # a jump, not a ramp
    assert (step.size_at(0.49), step.size_at(0.5)) == (16, 30)
    views = DeviceViews(ViewSpec((CropSpec(count=2), CropSpec(count=3, size=16))), Preprocess(32, [0.5] * 3, [0.25] * 3), ramp=ramp)
    batch = {"images": torch.rand(4, 3, 40, 40), "view_params": torch.tensor(
        [[draw_view_params(40, 40, CropSpec(), sample_generator(0, 0, i * 5 + v)).row() for v in range(5)]
         for i in range(4)], dtype=torch.float32)}
    assert [v.shape[-1] for v in views(batch, progress=0.0)["views"]] == [16, 16, 8, 8, 8]
    assert [v.shape[-1] for v in views(batch, progress=1.0)["views"]] == [32, 32, 16, 16, 16]


def test_progressive_resize_trains_at_growing_sizes_and_refuses_what_it_cannot_do(tmp_path):
    ramp = ["data.image_size=24", "data.augment=device", "data.progressive_resize={start_size: 8, ramp: [0.0, 1.0]}",
            "train.max_steps=4"]
    run = selfsup.train("demo", [*TINY, *TINY_SIMCLR, *ramp, f"runs_dir={tmp_path}", "name=ramp"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["view_size"] for r in records] == [8, 16, 16, 24] and all(np.isfinite([r["loss"] for r in records]))
    with pytest.raises(ValueError, match="data.augment=device"):  # the worker path makes each view on its own
        build_config("demo", ["data.progressive_resize={start_size: 16}"])
    with pytest.raises(ValueError, match="start_size"):
        build_config("demo", ["data.augment=device", "data.progressive_resize={start_size: 48}"])
    with pytest.raises(ValueError, match="patch masks"):  # MAE's masks are drawn for full-size views
        selfsup.train("mae", [*TINY[:-1], *ramp, f"runs_dir={tmp_path}", "name=mae"])
