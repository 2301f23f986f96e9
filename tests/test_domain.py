"""Domain images end to end: raw folders (13-band 16-bit GeoTIFFs, 16-bit PNGs), their statistics and pixel
window, the view operations by channel kind, bad files, caches, and RGB weights carried to N bands."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from selfsup import api
from selfsup.backbones import build_backbone
from selfsup.data import open_data
from selfsup.data.cache import open_cached
from selfsup.data.pixels import PixelWindow
from selfsup.data.spectral import SPECTRAL_CLASSES, generate_spectral
from selfsup.data.stats import STATS_FILE, compute_stats, load_stats
from selfsup.export import save_backbone
from selfsup.report import write_report
from selfsup.views import VIEW_OPS, CropSpec, apply_photometric, make_view, sample_generator
from selfsup.views.augment import NUM_PARAMS, photometric_params
from selfsup.views.device import NUM_GEOMETRY, crop_resize_flip
from selfsup.views.augment import draw_view_params

tifffile = pytest.importorskip("tifffile")
from selfsup.data.geotiff import write_geotiff_folder  # noqa: E402  (after the skip: needs tifffile)

TINY = ["train.max_steps=3", "train.batch_size=16", "train.progress=false", "eval.baselines=false",
        "eval.report=false", "train.precision=fp32", "data.num_workers=0"]


@pytest.fixture(scope="module")
def geotiff_folder(tmp_path_factory):
    """40 train + 20 test 13-band uint16 GeoTIFFs of the synthetic spectral set (class folders)."""
    root = tmp_path_factory.mktemp("geotiff")
    images, labels = generate_spectral(60, seed=5)
    write_geotiff_folder(root, images[:40], labels[:40], SPECTRAL_CLASSES, split="train")
    write_geotiff_folder(root, images[40:], labels[40:], SPECTRAL_CLASSES, split="test")
    return root, images, labels


# ------------------------------------------------------------------------------------------- view operations
@pytest.mark.parametrize("name", VIEW_OPS.names())
@pytest.mark.parametrize("kind,channels", [("rgb", 3), ("gray", 1), ("bands", 13), ("bands", 3)])
def test_no_view_operation_touches_a_kind_it_is_not_for(name, kind, channels):
    """Every registered operation, forced on for every image: it runs exactly when its kinds allow it."""
    op = VIEW_OPS.get(name)
    if op.stage == "geometry":
        assert op.kinds == {"rgb", "gray", "bands"}  # crops, flips and turns mean the same on every kind
        return
    calls = []

    def spy(x, params):
        calls.append(x.shape)
        return op.apply(x, params)

    VIEW_OPS.remove(name)  # ViewOp is frozen: register a spying copy in its place
    VIEW_OPS.add(name, type(op)(op.kinds, op.stage, spy, op.gate))
    try:
        gen = random.Random(0)
        spec = CropSpec(jitter_p=1, grayscale_p=1, blur_p=1, solarize_p=1, band_dropout_p=1, noise_p=1)
        params = torch.stack([photometric_params(spec, gen, kind) for _ in range(4)])
        apply_photometric(torch.rand(4, channels, 8, 8), params, kind)
    finally:
        VIEW_OPS.remove(name)
        VIEW_OPS.add(name, op)
    assert bool(calls) == (kind in op.kinds), f"{name} on {kind}: called {len(calls)} times"


def test_band_operations_vary_bands_independently_and_deterministically():
    spec = CropSpec(band_dropout_p=1.0, band_dropout_rate=0.5, noise_p=0.0, jitter_p=1.0)
    x = torch.rand(8, 13, 16, 16) * 0.5 + 0.25
    params = torch.stack([photometric_params(spec, random.Random(i), "bands") for i in range(8)])
    out = apply_photometric(x, params, "bands")
    assert torch.equal(out, apply_photometric(x, params, "bands"))
    flat = out.flatten(2)
    dropped = flat.std(-1) < 1e-6  # flattened to their mean
    assert dropped.any() and not dropped.all(1).any()  # some bands dropped, never all of one image's
    gains = (out.mean((2, 3)) / x.mean((2, 3)))[~dropped]
    assert gains.std() > 0.01  # per-band gains, not one gain per image


def test_overhead_views_equal_on_both_paths():
    """Vertical flips and quarter turns: the device path equals make_view (up to float rounding)."""
    spec = CropSpec(vflip_p=0.5, rot90=True, scale=(0.3, 1.0))
    images = torch.rand(6, 13, 24, 24)
    reference, geometry = [], []
    for i, image in enumerate(images):
        reference.append(make_view(image, spec, 16, sample_generator(1, 0, i), "bands")[0])
        geometry.append(draw_view_params(24, 24, spec, sample_generator(1, 0, i), "bands").row()[:NUM_GEOMETRY])
    turns = {int(row[6]) for row in geometry}
    assert len(turns) > 1 and any(row[5] for row in geometry)
    device = crop_resize_flip(images, torch.tensor(geometry).view(6, 1, NUM_GEOMETRY), 16)[:, 0]
    assert torch.allclose(device, torch.stack(reference), atol=1e-5)
    assert make_view(images[0], CropSpec(), 16, sample_generator(1, 0, 0))[1].shape == (NUM_PARAMS,)


# ------------------------------------------------------------------------------------- reading and statistics
def test_geotiff_folder_opens_raw_with_its_statistics(geotiff_folder):
    root, images, _ = geotiff_folder
    splits = open_data(str(root))
    train, test = splits.train, splits.test
    assert train.raw and train.channels == 13 and train.channel_kind == "bands" and len(test) == 20
    assert np.array_equal(train.get_raw(0), images[0])  # the files keep every bit
    stats = train.stats
    flat = images[:40].transpose(1, 0, 2, 3).reshape(13, -1).astype(np.float64)
    assert np.allclose(stats.mean, flat.mean(1)) and np.allclose(stats.std, flat.std(1))
    assert stats.min == flat.min(1).tolist() and stats.max == flat.max(1).tolist()
    assert np.allclose(stats.percentiles["99"], np.percentile(flat, 99, axis=1, method="inverted_cdf"))
    low, high = stats.percentiles["1"], stats.percentiles["99"]
    assert train.window == PixelWindow(tuple(low), tuple(high)) == test.window  # one window for both splits
    unit = np.clip((flat - np.array(low)[:, None]) / (np.array(high) - np.array(low))[:, None], 0, 1)
    assert np.allclose(train.mean, unit.mean(1), atol=1e-6) and np.allclose(train.std, unit.std(1), atol=1e-6)
    x = train.get_image(0)
    assert x.dtype == torch.float32 and x.shape == (13, 32, 32) and 0 <= x.min() and x.max() <= 1


def test_stats_command_writes_the_file_runs_read(geotiff_folder, tmp_path, capsys):
    from selfsup.cli import main

    root, _, _ = geotiff_folder
    out = tmp_path / "stats.json"
    assert main(["data", "stats", str(root), "--out", str(out)]) == 0
    assert "13 bands, uint16" in capsys.readouterr().out
    stats = load_stats(out)
    assert stats.images == 40 and stats.channels == 13
    # a window from another file is used as it is: here the file's 2-98 window
    splits = open_data(str(root), stats=str(out), clip_percentiles=(2.0, 98.0))
    assert splits.train.window.low == tuple(stats.percentiles["2"])
    assert splits.train.mean == stats.unit["2-98"]["mean"]
    assert not (root / STATS_FILE).exists()  # --out went elsewhere


def test_sixteen_bit_pngs_keep_their_bits(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(6):
            values = rng.integers(0, 65536, (16, 16)).astype(np.uint16)
            Image.fromarray(values).save(tmp_path / c / f"{i}.png")
    train = open_data(str(tmp_path), holdout_fraction=0.34).train
    assert train.raw and train.channels == 1 and train.get_raw(0).dtype == np.uint16
    assert len(np.unique(train.get_raw(0))) > 200  # not 256 levels of an 8-bit rescale


def test_raw_cache_keeps_sixteen_bits(geotiff_folder, tmp_path):
    root, _, _ = geotiff_folder
    train = open_data(str(root)).train
    cached = open_cached(train, 32, 32, tmp_path, log=lambda m: None)
    assert cached.images.dtype == np.uint16 and len(cached) == len(train)
    assert torch.allclose(cached.get_image(3), train.get_image(3), atol=1 / 65535 + 1e-6)
    assert open_cached(train, 32, 32, tmp_path, log=lambda m: None).meta == cached.meta  # reused


# ----------------------------------------------------------------------------------------- bad files, training
def test_planted_bad_folder_trains_and_lists_every_bad_file(geotiff_folder, tmp_path):
    root, images, labels = geotiff_folder
    folder = tmp_path / "planted"
    write_geotiff_folder(folder, images[:30], labels[:30], SPECTRAL_CLASSES)
    water = folder / "water"
    bad = {
        "four_bands.tif": (images[0][:4], "4 bands"),
        "nan.tif": (np.where(np.arange(32)[None, :, None] == 3, np.nan, images[0]).astype(np.float32), "NaN"),
        "double.tif": (images[1].astype(np.float64), "float64"),
        "tiny.tif": (images[2][:, :1, :1], "1x1"),
    }
    for name, (array, _) in bad.items():
        tifffile.imwrite(water / name, np.ascontiguousarray(array), photometric="minisblack", planarconfig="separate")
    whole = next(water.glob("0*.tif")).read_bytes()
    (water / "truncated.tif").write_bytes(whole[: len(whole) // 2])
    bad["truncated.tif"] = (None, "truncated")
    run = api.train("simclr-small", [f"data.source={folder}", f"runs_dir={tmp_path / 'runs'}", "name=planted",
                                     "data.max_bad_fraction=0.3", *TINY])
    lines = dict(line.split("\t") for line in (run / "bad_files.txt").read_text().splitlines())
    assert {p.rsplit("/", 1)[-1] for p in lines} == set(bad)
    for name, (_, reason) in bad.items():
        assert reason.lower() in next(r for p, r in lines.items() if p.endswith(name)).lower()
    assert json.loads((run / "results.json").read_text())["results"]["pretrained"]["knn_top1@20"] >= 0
    page = write_report(run, projections=("pca",)).read_text()  # the report lists them too, and the bands' window
    assert all(name in page for name in bad) and "13 bands of uint16" in page and "truncated" in page


def test_geotiffs_train_with_simclr_and_mae_and_the_run_keeps_its_window(geotiff_folder, tmp_path):
    root, _, _ = geotiff_folder
    for recipe, extra in (("simclr-small", ["data.overhead=true"]), ("mae", ["backbone.name=vit_micro_cpu"])):
        run = api.train(recipe, [f"data.source={root}", f"runs_dir={tmp_path}", f"name={recipe}", *TINY, *extra])
        losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
                  if '"loss"' in line]
        assert losses and all(np.isfinite(losses))
        saved = load_stats(run / "data_stats.json")
        assert saved.channels == 13
        results = json.loads((run / "results.json").read_text())
        assert results["results"]["pretrained"]["knn_top1@20"] > 0
        assert json.loads((run / "backbone.json").read_text())["spec"]["in_channels"] == 13


def test_rgb_weights_carried_to_thirteen_bands_train(geotiff_folder, tmp_path, capfd):
    root, _, _ = geotiff_folder
    torch.manual_seed(0)
    rgb = build_backbone("small_resnet", 3)
    save_backbone(rgb, tmp_path / "rgb", image_size=32, mean=0.5, std=0.25)
    run = api.train("simclr-small", [f"data.source={root}", f"runs_dir={tmp_path}", "name=carried",
                                     f"backbone.weights={tmp_path / 'rgb'}", *TINY])
    assert "carried stem.0.weight of backbone.safetensors from 3 to 13 input bands (repeat)" in capfd.readouterr().err
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses and all(np.isfinite(losses))
    with pytest.raises(Exception, match="backbone.weights"):
        api.train("simclr-small", [f"data.source={root}", f"runs_dir={tmp_path}", "name=wrong",
                                   f"backbone.weights={tmp_path / 'missing.safetensors'}", *TINY])


def test_channels_key_names_the_band_count(geotiff_folder, tmp_path):
    root, _, _ = geotiff_folder
    with pytest.raises(Exception, match="13 bands.*data.channels"):
        open_data(str(root), channels=3)
    assert compute_stats(open_data(str(root)).train, max_images=5).images == 5


def test_npz_statistics_beside_the_file_are_found(tmp_path, capsys):
    from selfsup.cli import main

    images, labels = generate_spectral(30, seed=2)
    np.savez(tmp_path / "s.npz", images=images, labels=labels)
    assert main(["data", "stats", str(tmp_path / "s.npz")]) == 0
    assert (tmp_path / "s.stats.json").is_file() and "data.stats=" not in capsys.readouterr().out
    messages = []
    train = open_data(str(tmp_path / "s.npz"), log=messages.append).train
    assert any("s.stats.json" in m for m in messages)  # read, not recomputed
    assert train.stats.images == len(train) < 30 and train.channel_kind == "bands"  # the train split only


def test_a_photo_folder_with_one_stray_sixteen_bit_png_stays_eight_bit(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
    Image.fromarray(rng.integers(0, 65536, (12, 12)).astype(np.uint16)).save(tmp_path / "deep.png")
    train = open_data(str(tmp_path)).train
    assert not train.raw and train.channels == 3 and len(train) == 6  # the 16-bit PNG is decoded to 8 bits
    assert open_data(str(tmp_path), pixels="raw").train.channels == 1  # forced raw: only the PNG is read
