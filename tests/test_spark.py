"""SparK's sparse (masked) convolution: the dense network's output on fully visible inputs, zeros in masked regions,
and masked content never reaching the output; the method on small_resnet and a torchvision ResNet."""
import copy

import pytest
import torch
import torch.nn as nn

from selfsup.backbones import build_backbone
from selfsup.backbones.feature_maps import stage_features
from selfsup.methods import build_method
from selfsup.methods.parts.sparse import sparse_masking


def _keep(batch, grid, hidden_cells):
    keep = torch.ones(batch, 1, *grid)
    for b, r, c in hidden_cells:
        keep[b, 0, r, c] = 0
    return keep


@pytest.mark.parametrize("training", [False, True])
def test_a_masked_convolution_is_the_dense_one_on_visible_inputs_and_zero_where_masked(training):
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    layer.train(training)
    x = torch.randn(2, 3, 8, 8)
    dense = copy.deepcopy(layer)(x)
    with sparse_masking(layer, torch.ones(2, 1, 2, 2)):
        sparse = layer(x)
    assert torch.allclose(sparse, dense, atol=1e-5)
    keep = _keep(2, (2, 2), [(0, 0, 1), (1, 1, 0)])
    with sparse_masking(layer, keep):
        out = layer(x)
    pixels = torch.nn.functional.interpolate(keep, size=(8, 8), mode="nearest")
    assert (out[pixels.expand_as(out) == 0] == 0).all() and (out[pixels.expand_as(out) == 1] != 0).any()
    assert not hasattr(layer[1], "forward") or "forward" not in vars(layer[1])  # restored


@pytest.mark.parametrize("name,options,size", [("small_resnet", {"widths": [8, 8, 16, 16]}, 16),
                                               ("resnet18", {"cifar_stem": True}, 32)])
def test_a_sparse_backbone_is_dense_when_all_is_visible_and_ignores_masked_content(name, options, size):
    torch.manual_seed(0)
    backbone = build_backbone(name, 3, **options).eval()
    x = torch.randn(2, 3, size, size)
    dense = stage_features(backbone, x)
    last = dense[-1].shape[-2:]
    with sparse_masking(backbone, torch.ones(2, 1, *last)):
        sparse = stage_features(backbone, x)
    for a, b in zip(sparse, dense):
        assert torch.allclose(a, b, atol=1e-5)
    keep = _keep(2, last, [(0, 0, 0), (1, last[0] - 1, last[1] - 1)])
    with sparse_masking(backbone, keep):
        out = stage_features(backbone, x)
    for stage in out:  # zero in the masked regions at every resolution, not elsewhere
        hidden = torch.nn.functional.interpolate(keep, size=stage.shape[-2:], mode="nearest").expand_as(stage) == 0
        assert (stage[hidden] == 0).all() and stage[~hidden].abs().sum() > 0


def test_what_spark_predicts_does_not_depend_on_the_masked_content():
    torch.manual_seed(0)
    method = build_method("spark", build_backbone("small_resnet", 3, widths=[8, 8, 16, 16]), {"decoder_width": 8})
    method.eval()
    x = torch.randn(2, 3, 16, 16)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[0, 1] = mask[1, 2] = True
    pixels = torch.nn.functional.interpolate(mask.view(2, 1, 2, 2).float(), size=(16, 16), mode="nearest")
    changed = x + pixels * torch.randn_like(x) * 5
    assert torch.allclose(method.predict(x, mask)[0], method.predict(changed, mask)[0])


def test_spark_trains_on_a_torchvision_resnet():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", 3, cifar_stem=True)
    method = build_method("spark", backbone, {"decoder_width": 8})
    assert method.stride == 8 and method.views.masks.patch_size == 8
    images = torch.randn(4, 3, 32, 32)
    mask = torch.zeros(4, 16, dtype=torch.bool)
    mask[:, :10] = True
    out = method({"views": [images], "masks": {"mask": mask}})
    out.loss.backward()
    assert torch.isfinite(out.loss) and backbone.model.conv1.weight.grad.abs().sum() > 0
    picture = method.reconstruct(images[:2])
    assert picture["reconstruction"].shape == images[:2].shape
