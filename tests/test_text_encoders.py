"""Text views (tokenize, choose_caption) and the CPU text encoders (text_micro_cpu, text_tiny_cpu), in two towers."""
import pytest
import torch

open_clip = pytest.importorskip("open_clip")  # the text extra

from selfsup.backbones import build_backbone  # noqa: E402
from selfsup.backbones.text import TEXT_ENCODERS, build_text_encoder, text_encoder_from_spec  # noqa: E402
from selfsup.backbones.towers import ImageTextTowers, towers_from_spec  # noqa: E402
from selfsup.config import ConfigError  # noqa: E402
from selfsup.views.text import BPE_VOCAB_SIZE, choose_caption, tokenize  # noqa: E402

CAPTIONS = ["A photo of a dog.", "two cats sleeping on a red sofa, next to an open window", "", "Ünïcödé & émojis 🙂"]


def test_tokenize_gives_open_clips_ids():
    tokens = tokenize(CAPTIONS, 16)
    assert tokens.shape == (4, 16) and tokens.dtype == torch.long
    assert torch.equal(tokens, open_clip.tokenize(CAPTIONS, context_length=16))
    assert torch.equal(tokens, open_clip.get_tokenizer("ViT-B-32")(CAPTIONS, context_length=16))
    sot, eot = BPE_VOCAB_SIZE - 2, BPE_VOCAB_SIZE - 1
    assert (tokens[:, 0] == sot).all() and (tokens.argmax(-1) == (tokens == eot).int().argmax(-1)).all()
    assert torch.equal(tokenize("A photo of a dog.", 16), tokens[:1])


def test_tokenize_cuts_long_captions_and_keeps_their_end_of_text():
    tokens = tokenize(["word " * 100], 8)
    assert tokens.shape == (1, 8) and tokens[0, -1] == BPE_VOCAB_SIZE - 1 and (tokens != 0).all()


@pytest.mark.parametrize("bad", [0, 1, 3.0, True])
def test_tokenize_rejects_a_context_without_room(bad):
    with pytest.raises(ValueError, match="context_length"):
        tokenize(["x"], bad)


def test_choose_caption_is_uniform_and_reproducible():
    captions = ["a", "b", "c"]
    draws = [choose_caption(captions, torch.Generator().manual_seed(s)) for s in range(300)]
    assert draws == [choose_caption(captions, torch.Generator().manual_seed(s)) for s in range(300)]
    assert all(70 <= draws.count(c) <= 130 for c in captions)  # 100 expected, sd 8
    with pytest.raises(ValueError):
        choose_caption([], torch.Generator())


@pytest.mark.parametrize("name, width", [("text_micro_cpu", 128), ("text_tiny_cpu", 256)])
def test_cpu_text_encoders(name, width):
    torch.manual_seed(0)
    encoder = build_text_encoder(name)
    assert (encoder.num_features, encoder.context_length, encoder.vocab_size) == (width, 32, BPE_VOCAB_SIZE)
    assert encoder.projected is False and name in TEXT_ENCODERS
    tokens = tokenize(CAPTIONS, 32)
    encoder.eval()
    out = encoder(tokens)
    assert out.shape == (4, width) and torch.isfinite(out).all()
    rebuilt = text_encoder_from_spec(encoder.spec)
    rebuilt.load_state_dict(encoder.state_dict(), strict=True)
    assert rebuilt.spec == encoder.spec
    assert torch.equal(rebuilt.eval()(tokens), out)


def test_text_encoder_is_causal_and_pools_the_end_of_text_token():
    torch.manual_seed(0)
    encoder = build_text_encoder("text_micro_cpu", context_length=16, width=32, heads=2, layers=1).eval()
    tokens = tokenize(["a photo of a dog"], 16)
    changed = tokens.clone()
    changed[0, -1] = 123  # after the end of text: neither seen (causal mask) nor pooled
    assert torch.allclose(encoder(tokens), encoder(changed), atol=1e-6)
    other = tokens.clone()
    other[0, 2] = 999  # before it: changes the pooled features
    assert not torch.allclose(encoder(tokens), encoder(other))


def test_text_encoder_options_are_checked():
    encoder = build_text_encoder("text_micro_cpu", context_length=16, width=32, heads=2, layers=1)
    assert encoder.spec == {"name": "text_micro_cpu", "context_length": 16, "width": 32, "heads": 2, "layers": 1,
                            "mlp_ratio": 4.0}
    with pytest.raises(ConfigError, match="no option"):
        build_text_encoder("text_micro_cpu", depth=2)
    with pytest.raises(ConfigError, match="divisible"):
        build_text_encoder("text_micro_cpu", width=30, heads=4)
    with pytest.raises(ConfigError, match="open_clip:<arch>"):
        build_text_encoder("text_micro")


def test_two_towers_with_small_resnet_and_text_micro_cpu():
    torch.manual_seed(0)
    towers = ImageTextTowers(build_backbone("small_resnet"), build_text_encoder("text_micro_cpu"), 32).eval()
    assert towers.context_length == 32
    images, tokens = torch.randn(4, 3, 32, 32), tokenize(CAPTIONS, 32)
    z_image, z_text = towers(images, tokens)
    assert z_image.shape == z_text.shape == (4, 32)
    assert torch.allclose(z_image.norm(dim=-1), torch.ones(4)) and torch.allclose(z_text.norm(dim=-1), torch.ones(4))
    rebuilt = towers_from_spec(towers.spec)
    rebuilt.load_state_dict(towers.state_dict(), strict=True)
    assert rebuilt.spec == towers.spec
    for a, b in zip(rebuilt.eval()(images, tokens), (z_image, z_text)):
        assert torch.equal(a, b)
