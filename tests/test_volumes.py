"""Volumes (the field kind ``volume``): the dataset and its source, 3-D views, cube and tube masks, the 3-D ViT
and ResNet, MAE on volumes end to end, and 2-D slice sampling."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import selfsup
from selfsup.backbones import build_backbone
from selfsup.backbones.vit3d import patchify_3d, sincos_pos_embed_3d, unpatchify_3d
from selfsup.data import open_data
from selfsup.data.sources import DataError
from selfsup.data.stats import compute_stats
from selfsup.data.volumes import VolumeSource, volume_slices
from selfsup.fields import VOLUME_FIELDS
from selfsup.methods import build_method
from selfsup.views import CropSpec, CubeMask, MaskSpec, TubeMask, ViewSpec
from selfsup.views.dataset import ViewCollate, ViewDataset, viewed_field
from selfsup.views.masks import check_mask_spec
from selfsup.views.preprocess import Preprocess, eval_transform
from selfsup.views.volume import make_volume_view

TINY = ["train.max_steps=3", "train.batch_size=16", "train.precision=fp32", "eval.baselines=false",
        "eval.report=false", "data.num_workers=0", "train.progress=false"]


@pytest.fixture(scope="module")
def volumes():
    return open_data("volumes")


def test_volumes_dataset_is_a_windowed_volume_source(volumes):
    train, test = volumes.train, volumes.test
    assert isinstance(train, VolumeSource) and (len(train), len(test)) == (2000, 500)
    assert train.fields == VOLUME_FIELDS and viewed_field(train) == ("image", "volume")
    assert train.channel_kind == "bands" and train.window.channels == 1 and test.window == train.window
    volume = train.get_image(0)
    assert volume.shape == (1, 16, 16, 16) and volume.dtype == torch.float32 and 0 <= volume.min() <= volume.max() <= 1
    stats = compute_stats(train, max_images=50)  # (C, D, H, W) raw arrays
    assert stats.channels == 1 and stats.dtype == "uint16"
    with pytest.raises(DataError, match=r"\(N, C, D, H, W\)"):
        VolumeSource(np.zeros((4, 1, 8, 8), np.uint16))


def test_volume_views_shapes_determinism_and_flips(volumes):
    volume = volumes.train.get_image(3)
    spec = CropSpec(scale=(0.3, 1.0))
    a, params = make_volume_view(volume, spec, 8, random.Random(5))
    b, _ = make_volume_view(volume, spec, 8, random.Random(5))
    assert a.shape == (1, 8, 8, 8) and params.numel() == 0 and torch.equal(a, b)
    assert 0 <= a.min() <= a.max() <= 1
    whole = CropSpec(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0, jitter_p=0.0, noise_p=0.0)
    flipped, _ = make_volume_view(volume, whole, 16, random.Random(0))
    assert torch.allclose(flipped, volume.flip([1, 2, 3]), atol=1e-6)  # the whole volume, flipped on every axis
    still, _ = make_volume_view(volume, CropSpec(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                                                 noise_p=0.0), 16, random.Random(0))
    assert torch.allclose(still, volume, atol=1e-6)
    jittered, _ = make_volume_view(volume, CropSpec(flip_p=0.0, jitter_p=1.0, noise_p=1.0), 16, random.Random(1))
    assert not torch.allclose(jittered, still)


def test_view_dataset_and_collate_normalise_volume_batches(volumes):
    views = ViewSpec(crops=(CropSpec(count=2),))
    dataset = ViewDataset(volumes.train, views, 16, seed=0)
    preprocess = Preprocess(16, volumes.train.mean, volumes.train.std)
    batch = ViewCollate(preprocess, dataset.kind)([dataset[(0, i)] for i in range(8)])
    assert [v.shape for v in batch["views"]] == [(8, 1, 16, 16, 16)] * 2
    again = ViewCollate(preprocess, dataset.kind)([dataset[(0, i)] for i in range(8)])
    assert torch.equal(batch["views"][0], again["views"][0])
    evaluated = eval_transform(volumes.test.get_image(0), 8, volumes.train.mean, volumes.train.std)
    assert evaluated.shape == (1, 8, 8, 8)


def test_cube_and_tube_masks():
    grid = (4, 4, 4)
    cube = CubeMask(0.75)(grid, random.Random(0))
    assert cube["mask"].shape == (64,) and int(cube["mask"].sum()) == 48 and cube["visible"].shape == (16,)
    tube = TubeMask(0.75)(grid, random.Random(0))
    mask = tube["mask"].reshape(4, 16)
    assert int(tube["mask"].sum()) == 48 and (mask == mask[0]).all()  # the same positions at every depth
    spec = MaskSpec(CubeMask(0.75), patch_size=4, dims=3)
    check_mask_spec(spec, [16])
    with pytest.raises(ValueError, match="3-D patch grid"):
        TubeMask()((4, 4), random.Random(0))


def test_vit3d_tokens_patchify_and_resnet3d():
    vit = build_backbone("vit3d_micro_cpu", 2, sincos_pos_embed=True).eval()
    assert vit.grid_size == (4, 4, 4) and vit.num_patches == 64 and vit.spec["in_channels"] == 2
    x = torch.randn(3, 2, 16, 16, 16)
    with torch.no_grad():
        tokens = vit.forward_tokens(x)
        kept = vit.forward_tokens(x, keep_indices=torch.arange(10).expand(3, -1))
        assert vit(x).shape == (3, 128) and tokens["patches"].shape == (3, 64, 128)
        assert kept["patches"].shape == (3, 10, 128) and kept["cls"].shape == (3, 128)
        assert vit(torch.randn(1, 2, 8, 8, 8)).shape == (1, 128)  # other sizes: positions resampled
    assert not vit.pos_embed.requires_grad and vit.pos_embed.shape == (1, 64, 128)
    assert sincos_pos_embed_3d(128, (4, 4, 4)).shape == (64, 128)
    assert torch.equal(unpatchify_3d(patchify_3d(x, 4), 4, (4, 4, 4)), x)
    assert patchify_3d(x, 4).shape == (3, 64, 128)
    resnet = build_backbone("resnet3d_small", 3).eval()
    with torch.no_grad():
        assert resnet(torch.randn(2, 3, 16, 16, 16)).shape == (2, resnet.num_features)


def test_mae_3d_cube_and_tube_losses():
    vit = build_backbone("vit3d_micro_cpu", 1)
    for mask in ("cube", "tube"):
        method = build_method("mae", vit, {"mask": mask, "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2})
        assert method.views.masks.dims == 3
    with pytest.raises(ValueError, match="volumes"):
        build_method("mae", build_backbone("vit_micro_cpu"), {"mask": "tube"})


def test_mae_3d_trains_on_volumes_through_the_api(tmp_path):
    run_dir = selfsup.train("mae-3d", [*TINY, f"runs_dir={tmp_path}", "name=mae3d"])
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["steps"] == 3 and "knn_top1@20" in results["results"]["pretrained"]
    assert (run_dir / "reconstructions.png").is_file()


def test_simclr_trains_on_volumes_with_the_3d_resnet(tmp_path):
    run_dir = selfsup.train("simclr-small", [*TINY, "data.source=volumes", "data.image_size=16",
                                             "backbone.name=resnet3d_small", "backbone.options={}",
                                             "eval.protocols=[knn]", f"runs_dir={tmp_path}", "name=simclr3d"])
    assert (run_dir / "results.json").is_file()


def test_slices_turn_volumes_into_images_held_out_by_volume(volumes, tmp_path):
    sliced = volume_slices(volumes)
    assert len(sliced.train) == 2000 * 16 and len(sliced.test) == 500 * 16
    assert sliced.train.get_image(17).shape == (1, 16, 16) and sliced.train.labels[17] == volumes.train.labels[1]
    assert torch.equal(sliced.train.get_image(17), volumes.train.get_image(1)[:, 1])
    assert viewed_field(sliced.train) == ("image", "image") and sliced.train.mean == volumes.train.mean
    run_dir = selfsup.train("mae", [*TINY, "data.source=volumes", "data.slices=true", "data.image_size=16",
                                    "eval.protocols=[knn]", f"runs_dir={tmp_path}", "name=slices"])
    assert (run_dir / "results.json").is_file()


def test_a_2d_backbone_on_volumes_fails_at_start_and_names_the_way_out(tmp_path):
    with pytest.raises(Exception, match="vit3d_micro_cpu.*data.slices=true"):
        selfsup.train("mae", [*TINY, "data.source=volumes", "data.image_size=16", f"runs_dir={tmp_path}"])
