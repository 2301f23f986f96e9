"""open_clip towers in selfsup: loaded weights compute what open_clip computes, and towers export back into
open_clip's layout (tiny architectures written as open_clip model-config files; random weights, nothing downloaded)."""
import json

import pytest
import torch
from safetensors.torch import save_file

open_clip = pytest.importorskip("open_clip")  # the text extra

from selfsup.backbones import backbone_from_spec, build_backbone  # noqa: E402
from selfsup.backbones.open_clip_towers import resolve_open_clip_arch  # noqa: E402
from selfsup.backbones.text import build_text_encoder  # noqa: E402
from selfsup.backbones.towers import ImageTextTowers, towers_from_spec  # noqa: E402
from selfsup.config import ConfigError  # noqa: E402
from selfsup.eval.evaluate import load_any_backbone  # noqa: E402
from selfsup.export import load_backbone, save_backbone  # noqa: E402
from selfsup.export.open_clip import export_open_clip, load_open_clip_towers, open_clip_state_dict  # noqa: E402
from selfsup.views.text import tokenize  # noqa: E402

VISION = {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8}
TEXT = {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
ARCHS = {
    "selfsup-test-clip": {"embed_dim": 32, "vision_cfg": VISION, "text_cfg": TEXT},
    # SigLIP's layout: the text tower under text.*, a logit bias, and a (1,)-shaped logit scale and bias
    "selfsup-test-custom-text": {"embed_dim": 32, "custom_text": True, "init_logit_bias": -10.0,
                            "nonscalar_logit_scale": True, "vision_cfg": VISION, "text_cfg": TEXT},
}
PROMPTS = ["a photo of a dog", "a photo of a cat", "a blurry photo of an airplane on the runway"]
OPENAI_MEAN = list(open_clip.OPENAI_DATASET_MEAN)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """name -> (config file, open_clip model in eval mode, its state dict as safetensors, as a torch file)."""
    folder = tmp_path_factory.mktemp("open_clip")
    out = {}
    for seed, (name, cfg) in enumerate(ARCHS.items()):
        config = folder / f"{name}.json"
        config.write_text(json.dumps(cfg))
        open_clip.add_model_config(config)
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None).eval()
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, folder / f"{name}.safetensors")
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, folder / f"{name}.pt")
        out[name] = (config, model, folder / f"{name}.safetensors", folder / f"{name}.pt")
    return out


def _inputs():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _assert_same_as_open_clip(towers, model, images, tokens):
    with torch.no_grad():
        ours_image, ours_text = towers.encode_image(images, False), towers.encode_text(tokens, False)
        torch.testing.assert_close(ours_image, model.encode_image(images), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours_text, model.encode_text(tokens), atol=1e-5, rtol=0)
        logits = towers.logit_scale.exp() * towers.encode_image(images) @ towers.encode_text(tokens).T
        if towers.logit_bias is not None:
            logits = logits + towers.logit_bias
        torch.testing.assert_close(logits, model.get_logits(images, tokens)[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("file_kind", ["safetensors", "torch"])
def test_loaded_towers_compute_what_open_clip_computes(reference, name, file_kind):
    config, model, safetensors_file, torch_file = reference[name]
    towers = load_open_clip_towers(str(config), safetensors_file if file_kind == "safetensors" else torch_file)
    assert isinstance(towers.image_projection, torch.nn.Identity)
    assert isinstance(towers.text_projection, torch.nn.Identity)
    assert towers.context_length == 16 and towers.text.tokenizer_name is None
    assert (towers.logit_bias is not None) == (name == "selfsup-test-custom-text")
    tokens = tokenize(PROMPTS, towers.context_length)
    assert torch.equal(tokens, open_clip.get_tokenizer(name)(PROMPTS))
    _assert_same_as_open_clip(towers, model, _inputs(), tokens)


@pytest.mark.parametrize("name", list(ARCHS))
def test_towers_go_back_into_open_clip(reference, name, tmp_path):
    config, model, weights, _ = reference[name]
    towers = load_open_clip_towers(name, weights)
    state = open_clip_state_dict(towers)
    assert state.keys() == model.state_dict().keys()
    fresh = open_clip.create_model(name, pretrained=None).eval()
    fresh.load_state_dict(state, strict=True)
    images, tokens = _inputs(), tokenize(PROMPTS, 16)
    _assert_same_as_open_clip(towers, fresh, images, tokens)
    # open_clip's own folder layout: create_model reads the config and the weights, strictly
    export_open_clip(towers, tmp_path / "exported")
    exported = open_clip.create_model(f"local-dir:{tmp_path / 'exported'}").eval()
    _assert_same_as_open_clip(towers, exported, images, tokens)


def test_towers_of_a_config_file_rebuild_from_their_spec_alone(reference, tmp_path):
    _, model, weights, _ = reference["selfsup-test-clip"]
    config = tmp_path / "gone.json"
    config.write_text(json.dumps(ARCHS["selfsup-test-clip"]))
    towers = load_open_clip_towers(str(config), weights)
    config.unlink()  # the spec carries the model config itself
    rebuilt = towers_from_spec(json.loads(json.dumps(towers.spec)))
    rebuilt.load_state_dict(towers.state_dict(), strict=True)
    _assert_same_as_open_clip(rebuilt.eval(), model, _inputs(), tokenize(PROMPTS, 16))


def test_open_clip_image_tower_is_a_backbone(reference, tmp_path):
    name = "selfsup-test-clip"
    _, model, weights, _ = reference[name]
    images = _inputs()
    backbone = build_backbone(f"open_clip:{name}", weights=weights).eval()
    assert backbone.num_features == 32 and backbone.projected and backbone.spec == {"name": f"open_clip:{name}",
                                                                                    "in_channels": 3}
    assert backbone.image_size == 32 and backbone.preprocess_cfg["mean"] == OPENAI_MEAN
    with torch.no_grad():
        expected = model.encode_image(images)
        torch.testing.assert_close(backbone(images), expected, atol=1e-5, rtol=0)
        # the image tower's state dict alone (open_clip's pretrained_image_path layout) loads as well
        visual_only = tmp_path / "visual.safetensors"
        save_file({k: v.contiguous() for k, v in model.visual.state_dict().items()}, visual_only)
        torch.testing.assert_close(build_backbone(f"open_clip:{name}", weights=visual_only).eval()(images), expected,
                                   atol=1e-5, rtol=0)
        rebuilt = backbone_from_spec(backbone.spec)
        rebuilt.load_state_dict(backbone.state_dict(), strict=True)
        torch.testing.assert_close(rebuilt.eval()(images), expected, atol=1e-5, rtol=0)
        save_backbone(backbone, tmp_path / "saved", image_size=32, mean=OPENAI_MEAN, std=0.27)
        torch.testing.assert_close(load_backbone(tmp_path / "saved")(images), expected, atol=1e-5, rtol=0)
        # selfsup eval --backbone open_clip:<arch> --weights FILE: a full open_clip file, size and normalisation
        evaluated, meta, trained = load_any_backbone(f"open_clip:{name}", weights, log=lambda _: None)
        assert trained and meta["image_size"] == 32
        assert meta["normalization"] == {"mean": OPENAI_MEAN, "std": list(open_clip.OPENAI_DATASET_STD)}
        torch.testing.assert_close(evaluated(images), expected, atol=1e-5, rtol=0)


def test_open_clip_text_tower_is_a_text_encoder(reference):
    name = "selfsup-test-custom-text"
    _, model, weights, _ = reference[name]
    encoder = build_text_encoder(f"open_clip:{name}", weights=weights).eval()
    assert (encoder.num_features, encoder.context_length, encoder.vocab_size) == (32, 16, 49408) and encoder.projected
    tokens = tokenize(PROMPTS, 16)
    with torch.no_grad():
        torch.testing.assert_close(encoder(tokens), model.encode_text(tokens), atol=1e-5, rtol=0)


def test_weights_that_do_not_fit_are_named(reference, tmp_path):
    name = "selfsup-test-clip"
    _, model, _, _ = reference[name]
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "ln_final.weight"}
    save_file({**state, "extra.weight": torch.zeros(1)}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=r"1 missing \(e.g. ln_final.weight\); 1 unexpected \(e.g. extra.weight\)"):
        load_open_clip_towers(name, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="ln_final.weight"):
        build_text_encoder(f"open_clip:{name}", weights=tmp_path / "bad.safetensors")
    other = reference["selfsup-test-custom-text"][2]  # a SigLIP-layout file for a CLIP-layout architecture
    with pytest.raises(ValueError, match="missing"):
        load_open_clip_towers(name, other)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_open_clip_towers(name, tmp_path / "absent.safetensors")


def test_only_open_clip_towers_export_to_open_clip(reference):
    towers = ImageTextTowers(build_backbone("small_resnet"), build_text_encoder("text_micro_cpu"), 32)
    with pytest.raises(ValueError, match="only towers whose image tower is the backbone open_clip:<arch>"):
        open_clip_state_dict(towers)
    mixed = ImageTextTowers(build_backbone("open_clip:selfsup-test-clip"), build_text_encoder("text_micro_cpu"), 32)
    with pytest.raises(ValueError, match="text tower 'text_micro_cpu'"):
        open_clip_state_dict(mixed)


def test_architecture_names_and_preprocessing():
    with pytest.raises(ConfigError, match="Did you mean 'ViT-B-32'"):
        resolve_open_clip_arch("ViT-B-23")
    with pytest.raises(ConfigError, match="never downloads"):
        build_backbone("open_clip:hf-hub:timm/ViT-B-16-SigLIP")
    with pytest.raises(ConfigError, match="3-channel"):
        build_backbone("open_clip:selfsup-test-clip", in_channels=1)
    with pytest.raises(ConfigError, match=r"no option\(s\) \['context_length'\]"):
        build_text_encoder("open_clip:selfsup-test-clip", context_length=32)
    # mean and std: what every pretrained tag shares (SigLIP: 0.5), a chosen tag's, or open_clip's defaults
    assert resolve_open_clip_arch("ViT-B-16-SigLIP").preprocess_cfg["mean"] == [0.5, 0.5, 0.5]
    assert resolve_open_clip_arch("ViT-L-14").preprocess_cfg["mean"] == OPENAI_MEAN
    laion = resolve_open_clip_arch("ViT-L-14", preprocess_tag="laion2b_s32b_b82k")
    assert laion.preprocess_cfg["mean"] == [0.5, 0.5, 0.5] and laion.image_size == (224, 224)
    # the text towers selfsup's tokenize serves: those open_clip tokenizes with CLIP's BPE
    assert resolve_open_clip_arch("ViT-B-32").tokenizer_name is None
    assert resolve_open_clip_arch("ViT-B-16-SigLIP").tokenizer_name is not None
    with pytest.raises(ConfigError, match="no pretrained tag"):
        resolve_open_clip_arch("ViT-L-14", preprocess_tag="dfn3b")
