"""Carrying a backbone's RGB input layer to N bands (selfsup.backbones.channels) and the channel-wise ViT option
(ChannelViT, Bao et al., ICLR 2024) of the registered ViTs; CPU, 32 px, fp32.

The exactness checks feed a gray image replicated over the bands. That stays a replicated image after input
normalisation only when every band is normalised with the same constants, as here: pixels in [0, 1] with
mean 0.5 and std 0.25 for every band.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from selfsup.backbones import backbone_from_spec, build_backbone, carry_backbone
from selfsup.backbones.channels import carry_input_weight, carry_state_dict, input_layer_key

MEAN, STD = 0.5, 0.25
# (name, options, input-layer key): one of each kind of backbone; resnet10t is a timm model with a deep stem
# (three convs), whose first_conv timm names as conv1.0.
CASES = {
    "small_resnet": ({"widths": (8, 16, 32, 64)}, "stem.0.weight"),
    "resnet18": ({"cifar_stem": True}, "model.conv1.weight"),
    "vit_micro_cpu": ({}, "model.patch_embed.proj.weight"),
    "timm:resnet10t": ({}, "model.conv1.0.weight"),
}
SENTINEL2_RGB = (3, 2, 1)  # B4, B3, B2 in the 13-band order B1, B2, ..., B8, B8A, B9, ..., B12


def _rgb_model(name: str) -> nn.Module:
    """A 3-channel backbone in eval mode whose BatchNorm statistics are not the identity (a few batches of
    train-mode forward first), so that eval-mode BatchNorm is part of what the comparison covers."""
    torch.manual_seed(0)
    model = build_backbone(name, 3, **CASES[name][0])
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(8, 3, 32, 32))
    return model.eval()


def _gray(batch: int = 2) -> torch.Tensor:
    pixels = torch.rand(batch, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    return (pixels - MEAN) / STD


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def rgb_models() -> dict[str, nn.Module]:
    return {name: _rgb_model(name) for name in CASES}


# ------------------------------------------------------------------------------------ input_layer_key
@pytest.mark.parametrize("name", list(CASES))
def test_input_layer_key(name, rgb_models):
    key = CASES[name][1]
    assert input_layer_key(rgb_models[name]) == key
    assert rgb_models[name].state_dict()[key].shape[1] == 3
    assert input_layer_key(build_backbone(name, 13, **CASES[name][0])) == key  # at any channel count


def test_input_layer_key_errors():
    class NoSpec(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

    with pytest.raises(ValueError, match="spec"):
        input_layer_key(NoSpec())
    wrong = NoSpec()
    wrong.spec = {"name": "wrong", "in_channels": 5}
    with pytest.raises(ValueError, match="no ungrouped .* 5 input channels"):
        input_layer_key(wrong)
    with pytest.raises(ValueError, match="channel-wise"):
        input_layer_key(build_backbone("vit_micro_cpu", 13, channelwise=True))


# --------------------------------------------------------------------------------- the weight mapping
@pytest.mark.parametrize("channels", [1, 2, 3, 4, 6, 13])
def test_repeat_preserves_the_summed_kernel(channels):
    weight = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    carried = carry_input_weight(weight, channels)
    assert carried.shape == (8, channels, 3, 3) and carried.dtype == weight.dtype
    _assert_close(carried.sum(1), weight.sum(1))


def test_repeat_against_timm():
    from timm.models._manipulate import adapt_input_conv

    weight = torch.randn(8, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    for channels in (1, 3, 6, 9):  # timm's scaling is the exact one here
        _assert_close(carry_input_weight(weight, channels), adapt_input_conv(channels, weight.clone()))
    # 13 from 3: timm's uniform 3/13 gives R 15/13 of its weight and G, B 12/13, so the sum is off; ours is not.
    timm13 = adapt_input_conv(13, weight.clone())
    assert not torch.allclose(timm13.sum(1), weight.sum(1), atol=1e-3)
    _assert_close(timm13[:, 0:13:3].sum(1), weight[:, 0] * 15 / 13)
    _assert_close(carry_input_weight(weight, 13)[:, 0], weight[:, 0] / 5)
    _assert_close(carry_input_weight(weight, 13)[:, 1], weight[:, 1] / 4)


def test_rgb_bands_weight():
    weight = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    carried = carry_input_weight(weight, 13, "rgb_bands", SENTINEL2_RGB)
    for src, band in enumerate(SENTINEL2_RGB):
        assert torch.equal(carried[:, band], weight[:, src])  # unscaled copies
    others = [b for b in range(13) if b not in SENTINEL2_RGB]
    for band in others:
        _assert_close(carried[:, band], weight.mean(1) * 3 / 13)
    # the documented price of the RGB-image property: a gray image responds (2C - 3) / C times as strongly
    _assert_close(carried.sum(1), weight.sum(1) * (2 * 13 - 3) / 13)


def test_carry_input_weight_errors():
    weight = torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match="unknown carry mode"):
        carry_input_weight(weight, 13, "copy")
    with pytest.raises(ValueError, match="needs rgb_bands"):
        carry_input_weight(weight, 13, "rgb_bands")
    with pytest.raises(ValueError, match="three distinct"):
        carry_input_weight(weight, 13, "rgb_bands", (3, 3, 1))
    with pytest.raises(ValueError, match="three distinct"):
        carry_input_weight(weight, 4, "rgb_bands", (3, 2, 4))
    with pytest.raises(ValueError, match="RGB kernel"):
        carry_input_weight(torch.randn(4, 2, 3, 3), 13, "rgb_bands", SENTINEL2_RGB)
    with pytest.raises(ValueError, match="only applies"):
        carry_input_weight(weight, 13, "repeat", SENTINEL2_RGB)


def test_carry_state_dict_touches_only_the_key(rgb_models):
    state = rgb_models["small_resnet"].state_dict()
    carried = carry_state_dict(state, "stem.0.weight", 13)
    assert carried.keys() == state.keys() and carried["stem.0.weight"].shape[1] == 13
    assert state["stem.0.weight"].shape[1] == 3  # the input is not modified
    assert all(carried[k] is state[k] for k in state if k != "stem.0.weight")
    with pytest.raises(KeyError):
        carry_state_dict(state, "conv1.weight", 13)


# ------------------------------------------------------------------------------ the exactness properties
@pytest.mark.parametrize("name", list(CASES))
def test_repeat_is_exact_on_a_gray_image(name, rgb_models):
    rgb = rgb_models[name]
    gray = _gray()
    with torch.no_grad():
        expected = rgb(gray.expand(-1, 3, -1, -1))
        for channels in (1, 13):
            carried = carry_backbone(rgb, channels).eval()
            assert carried.spec == {**rgb.spec, "in_channels": channels}
            _assert_close(carried(gray.expand(-1, channels, -1, -1)), expected)


@pytest.mark.parametrize("name", list(CASES))
def test_rgb_bands_is_exact_on_an_rgb_image(name, rgb_models):
    rgb = rgb_models[name]
    image = (torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) - MEAN) / STD
    bands = torch.zeros(2, 13, 32, 32)
    bands[:, list(SENTINEL2_RGB)] = image
    carried = carry_backbone(rgb, 13, "rgb_bands", SENTINEL2_RGB).eval()
    with torch.no_grad():
        _assert_close(carried(bands), rgb(image))


def test_carried_backbone_trains(rgb_models):
    carried = carry_backbone(rgb_models["small_resnet"], 13).train()
    x = torch.randn(4, 13, 32, 32, generator=torch.Generator().manual_seed(3))
    out = carried(x)
    assert out.shape == (4, carried.num_features)
    before = carried.stem[0].weight.detach().clone()
    optimizer = torch.optim.SGD(carried.parameters(), lr=0.1)
    out.pow(2).mean().backward()
    optimizer.step()
    assert torch.isfinite(carried.stem[0].weight).all() and not torch.equal(before, carried.stem[0].weight)
    # the carried backbone rebuilds from its spec like any other
    assert backbone_from_spec(json.loads(json.dumps(carried.spec))).stem[0].weight.shape[1] == 13


# ------------------------------------------------------------------------------------ channel-wise ViT
def _channelwise(seed: int = 0, **options) -> nn.Module:
    torch.manual_seed(seed)
    return build_backbone("vit_micro_cpu", 13, channelwise=True, **options).eval()


def test_channelwise_vit_shapes():
    vit = _channelwise()
    assert vit.spec["channelwise"] is True and vit.model.patch_embed.proj.in_channels == 1
    assert vit.band_embed.shape == (1, 13, 1, vit.embed_dim)
    x = torch.randn(2, 13, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = vit.forward_tokens(x)
        out = vit(x)
    assert tokens["patches"].shape == (2, 13 * 64, vit.embed_dim) and tokens["cls"].shape == (2, vit.embed_dim)
    assert out.shape == (2, vit.num_features)
    _assert_close(out, tokens["cls"])  # pooling unchanged: the class token
    avg = _channelwise(class_token=False, global_pool="avg")
    with torch.no_grad():
        _assert_close(avg(x), avg.forward_tokens(x)["patches"].mean(1))
    with pytest.raises(NotImplementedError, match="channelwise"):
        vit.forward_tokens(x, keep_indices=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(NotImplementedError, match="channelwise"):
        vit.forward_tokens(x, mask=torch.zeros(2, 64, dtype=torch.bool), mask_token=torch.zeros(vit.embed_dim))
    with pytest.raises(ValueError, match="13 bands"):
        vit(torch.randn(1, 3, 32, 32))


def test_channelwise_vit_embeds_bands_with_one_projection():
    vit = _channelwise()
    x = torch.randn(1, 13, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = vit.embed_patches(x).reshape(1, 13, 64, -1)
        # band 5 alone, through the single-band projection, plus the shared positions and band 5's embedding
        band5 = vit.model.patch_embed.proj(x[:, 5:6]).flatten(2).transpose(1, 2) + vit.model.pos_embed
    _assert_close(tokens[:, 5], band5 + vit.band_embed[:, 5])


def test_channelwise_spec_rebuilds_identically():
    vit = _channelwise(seed=0)
    spec = json.loads(json.dumps(vit.spec))  # as saved next to exported weights
    assert spec["channelwise"] is True
    rebuilt = backbone_from_spec(spec).eval()
    assert rebuilt.spec == spec and rebuilt.channelwise
    rebuilt.load_state_dict(vit.state_dict(), strict=True)
    x = torch.randn(2, 13, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), vit(x))
        assert torch.equal(_channelwise(seed=0)(x), vit(x))  # same seed, same weights
    # off by default, and then the spec has no channelwise entry (specs of existing ViTs are unchanged)
    assert "channelwise" not in build_backbone("vit_micro_cpu", 13).spec
    assert "channelwise" not in build_backbone("vit_micro_cpu", 13, channelwise=False).spec


def test_channelwise_vit_does_not_offer_the_timm_export():
    from selfsup.export.formats import supported_formats

    spec = build_backbone("vit_micro_cpu", 13, channelwise=True).spec
    assert "timm" not in supported_formats(spec) and "safetensors" in supported_formats(spec)
