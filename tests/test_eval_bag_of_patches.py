"""The bag-of-patches protocol (eval/protocols/bag_of_patches.py): the grid, the patches, and the features as
the mean of the backbone's features over the patches. Running in evaluate_backbone, the config section
eval.bag_of_patches, results.json, compare and the report are covered by tests/test_protocol_registry.py."""
import numpy as np
import torch

from selfsup.backbones import build_backbone
from selfsup.data.sources import ArraySource, DataSplits
from selfsup.eval.features import extract_features
from selfsup.eval.protocol import ProtocolSettings, evaluate_backbone
from selfsup.eval.protocols.bag_of_patches import (BagOfPatchesSettings, bag_of_patch_features, grid_boxes,
                                                   patch_grid)
from selfsup.views.preprocess import Preprocess

PREPROCESS = Preprocess(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _source(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return ArraySource((rng.random((n, 3, 16, 16)) * 255).astype(np.uint8), labels=np.arange(n) % 2)


def _backbone():
    torch.manual_seed(0)
    return build_backbone("small_resnet", 3, widths=(8, 8, 16, 16)).eval()


def test_grid_boxes_span_the_image_from_corner_to_corner():
    assert grid_boxes(32, 0.25, 3) == [(t, l, 16) for t in (0, 8, 16) for l in (0, 8, 16)]
    assert grid_boxes(32, 0.25, 1) == [(8, 8, 16)]  # one centred patch
    assert grid_boxes(16, 1.0, 2) == [(0, 0, 16)] * 4  # the whole image, however many
    assert len(grid_boxes(32, 0.1, 4)) == 16 and grid_boxes(32, 0.1, 4)[-1] == (22, 22, 10)


def test_patch_grid_cuts_and_resizes():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    boxes = grid_boxes(8, 0.25, 2)
    patches = patch_grid(images, boxes, None)
    assert patches.shape == (4, 2, 3, 4, 4)
    assert torch.equal(patches[3], images[:, :, 4:, 4:])
    assert patch_grid(images, boxes, 6).shape == (4, 2, 3, 6, 6)


def test_features_are_the_mean_over_the_patches():
    source, backbone = _source(), _backbone()
    settings = BagOfPatchesSettings(grid=2, patch_scale=0.25, batch_size=4)  # two batches: 4 + 2 images
    features = bag_of_patch_features(backbone, source, preprocess=PREPROCESS, settings=settings, device="cpu")
    images = torch.stack([PREPROCESS(source.get_image(i)) for i in range(len(source))])
    with torch.no_grad():
        expected = torch.stack([backbone(images[:, :, t:t + 8, l:l + 8]) for t in (0, 8) for l in (0, 8)]).mean(0)
    assert features.shape == (6, backbone.num_features)
    assert torch.allclose(features, expected, atol=1e-5)
    # one patch covering the whole image: the plain evaluation features
    whole = BagOfPatchesSettings(grid=1, patch_scale=1.0)
    plain, _ = extract_features(backbone, source, **PREPROCESS.to_json())
    assert torch.allclose(bag_of_patch_features(backbone, source, preprocess=PREPROCESS, settings=whole,
                                                device="cpu"), plain, atol=1e-5)


def test_runs_on_the_backbone_rows_only_and_leaves_the_backbone_as_it_was():
    data = DataSplits(train=_source(12, 0), test=_source(6, 1))
    backbone = _backbone().train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    settings = ProtocolSettings(protocols=("bag_of_patches",), options={"bag_of_patches": {"grid": 2, "k": [3]}})
    results = evaluate_backbone(backbone, data, preprocess=PREPROCESS, settings=settings, log=lambda m: None)
    assert results["raw_pixels"] == {}
    assert set(results["pretrained"]) == {"bag_knn_top1@3", "bag_linear_top1", "bag_linear_weight_decay"}
    assert backbone.training and all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
