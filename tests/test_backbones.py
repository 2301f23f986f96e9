"""The backbone registry: every registered name plus a few timm models, at 32 px on CPU."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from kind_utils import tiny_kind_source
from selfsup.backbones import BACKBONES, DEFAULT_BACKBONE, backbone_from_spec, build_backbone
from selfsup.config import ConfigError

# timm models that are cheap at 32 px, with the options that make them so.
TIMM_CASES = {
    "timm:vit_tiny_patch16_224": {"img_size": 32, "patch_size": 4},
    "timm:resnet18": {},
    "timm:convnext_atto": {},
}
#: What each registered encoder encodes (its factory's ``field_kind``; image when it says nothing).
KIND_OF = {name: getattr(BACKBONES.get(name), "field_kind", "image") for name in BACKBONES}
#: Encoders whose layout comes from the data (table columns, node-feature width): built from a tiny source of
#: their kind below; their forward passes are tested in tests/test_kind_*.py.
DATA_SHAPED = {name for name, kind in KIND_OF.items() if kind in ("table", "graph")}
CASES = {**{name: {} for name in sorted(BACKBONES) if name not in DATA_SHAPED}, **TIMM_CASES}
#: One batch of two inputs per kind, without the channel axis where the kind has one.
INPUT_SHAPE = {"image": (32, 32), "audio": (32, 32), "volume": (16, 16, 16), "video": (16, 16, 16)}
# Forward passes that would dominate the suite's run time on 2 cores: construction is still checked (with 3
# input channels; the other channel counts go through the same code as resnet18/50).
SLOW_FORWARD = {"resnet101"}


def _build(name: str, in_channels: int = 3) -> nn.Module:
    return build_backbone(name, in_channels=in_channels, **CASES[name])


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_default_backbone_is_registered():
    assert DEFAULT_BACKBONE in BACKBONES


@pytest.mark.parametrize("name, in_channels", [
    (name, c) for name in CASES for c in (1, 3, 5) if name not in SLOW_FORWARD or c == 3
])
def test_forward_shape(name, in_channels):
    torch.manual_seed(0)
    model = _build(name, in_channels).eval()
    assert isinstance(model.num_features, int) and model.num_features > 0
    assert model.spec["name"] == name and model.spec["in_channels"] == in_channels
    json.dumps(model.spec)  # JSON-able
    if name in SLOW_FORWARD:
        return
    # Volume and video encoders take (B, C, D, H, W); point encoders (B, N, 3) clouds whatever in_channels says.
    kind = getattr(model, "field_kind", "image")
    inputs = torch.randn(2, 64, 3) if kind == "points" else torch.randn(2, in_channels, *INPUT_SHAPE[kind])
    with torch.no_grad():
        out = model(inputs)
    assert out.shape == (2, model.num_features)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(CASES))
def test_spec_rebuilds_same_architecture(name):
    model = _build(name, in_channels=5)
    spec = json.loads(json.dumps(model.spec))  # as it comes back from backbone.json
    rebuilt = backbone_from_spec(spec)
    assert type(rebuilt) is type(model)
    assert _shapes(rebuilt) == _shapes(model)
    assert rebuilt.num_features == model.num_features
    assert rebuilt.spec == spec


@pytest.mark.parametrize("name", sorted(DATA_SHAPED))
def test_data_shaped_encoders_need_their_data_and_rebuild_from_spec(name):
    kind = KIND_OF[name]
    with pytest.raises(ConfigError, match=f"{name} encodes .*from the data"):
        build_backbone(name, in_channels=1)
    model = build_backbone(name, 1, **tiny_kind_source(kind).encoder_options)
    rebuilt = backbone_from_spec(json.loads(json.dumps(model.spec)))
    assert type(rebuilt) is type(model) and _shapes(rebuilt) == _shapes(model)
    assert rebuilt.num_features == model.num_features


def test_spec_keeps_options():
    model = build_backbone("small_resnet", in_channels=2, widths=(8, 16), blocks_per_stage=2)
    rebuilt = backbone_from_spec(json.loads(json.dumps(model.spec)))
    assert rebuilt.num_features == 16 == model.num_features
    assert _shapes(rebuilt) == _shapes(model)
    cifar = build_backbone("resnet18", cifar_stem=True)
    assert backbone_from_spec(cifar.spec).model.conv1.kernel_size == (3, 3)


def _stage1_size(model: nn.Module, stage1: nn.Module) -> tuple[int, int]:
    seen = {}

    def hook(module, inputs, output):
        seen["hw"] = tuple(output.shape[-2:])

    handle = stage1.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.randn(2, 3, 32, 32))
    handle.remove()
    return seen["hw"]


def test_cifar_stem_keeps_32px_in_stage1():
    cifar = build_backbone("resnet18", cifar_stem=True)
    assert cifar.model.conv1.kernel_size == (3, 3) and cifar.model.conv1.stride == (1, 1)
    assert isinstance(cifar.model.maxpool, nn.Identity)
    assert _stage1_size(cifar, cifar.model.layer1) == (32, 32)
    standard = build_backbone("resnet18")
    assert _stage1_size(standard, standard.model.layer1) == (8, 8)
    small = build_backbone("small_resnet")
    assert _stage1_size(small, small.stages[0]) == (32, 32)


def test_torchvision_resnet_state_dict_is_torchvision():
    import torchvision

    ours = build_backbone("resnet18").model.state_dict()
    ref = torchvision.models.resnet18(weights=None)
    ref.fc = nn.Identity()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("typo, suggestion", [("resnt18", "resnet18"), ("small-resnet", "small_resnet")])
def test_unknown_name_suggests_closest(typo, suggestion):
    with pytest.raises(ValueError, match=f"Did you mean '{suggestion}'") as err:
        build_backbone(typo)
    assert "timm:" in str(err.value)
