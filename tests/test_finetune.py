"""Known-answer tests of the image protocols: fine-tuning (selfsup.eval.finetune) and the full linear protocol
(selfsup.eval.linear_sgd), on tiny images whose classes differ by colour."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.config import ConfigError, EvalConfig, build_config
from selfsup.data.sources import ArraySource, DataSplits
from selfsup.eval.finetune import (FinetuneSettings, cutmix, finetune, finetune_param_groups, mix_batch, mixup,
                                   soft_targets, vit_layer_id)
from selfsup.eval.linear_sgd import LinearSGDSettings, linear_sgd
from selfsup.eval.display import format_table
from selfsup.eval.protocol import ProtocolSettings, evaluate_backbone
from selfsup.views.preprocess import Preprocess

SIZE = 16
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
TINY_RESNET = {"widths": (8, 8, 16, 16)}
TINY_VIT = {"img_size": SIZE, "patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2}
QUICK_FINETUNE = FinetuneSettings(epochs=4, lr=1e-2, batch_size=32)
QUICK_LINEAR = LinearSGDSettings(epochs=4, batch_size=32)


def coloured_squares(n_per_class: int, seed: int, noise: float = 20.0) -> ArraySource:
    """4 classes of 16x16 RGB images: a class colour plus Gaussian pixel noise."""
    rng = np.random.default_rng(seed)
    colours = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]], dtype=np.float32)
    labels = rng.permutation(np.repeat(np.arange(4), n_per_class))
    images = colours[labels][:, :, None, None] + rng.normal(0, noise, (len(labels), 3, SIZE, SIZE))
    return ArraySource(np.clip(images, 0, 255).astype(np.uint8), labels=labels, name=f"squares-{seed}")


@pytest.fixture(scope="module")
def squares() -> DataSplits:
    return DataSplits(train=coloured_squares(24, seed=0), test=coloured_squares(8, seed=1))


def tiny_resnet(seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone("small_resnet", 3, **TINY_RESNET)


class ChannelMeans(torch.nn.Module):
    """A frozen feature map that separates the colour classes: the mean of every channel."""

    num_features = 3

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))


def tiny_vit(seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone("vit_micro_cpu", 3, **TINY_VIT)


IMAGES = dict(preprocess=Preprocess(SIZE, MEAN, STD))


# ------------------------------------------------------------------------------------------ known answers
def test_finetune_and_linear_sgd_separate_colour_classes(squares):
    tuned = finetune(tiny_resnet(), squares, settings=QUICK_FINETUNE, **IMAGES)
    assert tuned["finetune_top1"] > 0.9
    assert tuned["finetune_layer_decay"] == 1.0  # a ResNet has no layer sequence to decay along
    assert linear_sgd(ChannelMeans(), squares, settings=QUICK_LINEAR, **IMAGES)["linear_sgd_top1"] > 0.9
    assert linear_sgd(None, squares, settings=QUICK_LINEAR, **IMAGES)["linear_sgd_top1"] > 0.9  # raw pixels


def test_finetune_a_vit_applies_layer_decay(squares):
    tuned = finetune(tiny_vit(), squares, settings=QUICK_FINETUNE, **IMAGES)
    assert tuned["finetune_top1"] > 0.9
    assert tuned["finetune_layer_decay"] == 0.75


def test_layer_decay_scales_of_a_tiny_vit():
    head = torch.nn.Linear(16, 4)
    groups, applied = finetune_param_groups(tiny_vit(), head, layer_decay=0.5, weight_decay=0.05)
    assert applied
    scale = {name: g["lr_scale"] for g in groups for name in g["names"]}
    decay = {name: g["weight_decay"] for g in groups for name in g["names"]}
    # depth 2: stem = layer 0 -> 0.5 ** 3, blocks.0 -> 0.5 ** 2, blocks.1 -> 0.5, final norm and head -> 1.
    expected = {"backbone.model.cls_token": 0.125, "backbone.model.pos_embed": 0.125,
                "backbone.model.patch_embed.proj.weight": 0.125, "backbone.model.patch_embed.proj.bias": 0.125,
                "backbone.model.blocks.0.attn.qkv.weight": 0.25, "backbone.model.blocks.0.norm1.weight": 0.25,
                "backbone.model.blocks.1.mlp.fc2.bias": 0.5, "backbone.model.norm.weight": 1.0,
                "backbone.model.norm.bias": 1.0, "head.weight": 1.0, "head.bias": 1.0}
    assert {name: scale[name] for name in expected} == expected
    assert set(scale.values()) == {0.125, 0.25, 0.5, 1.0}
    # Tokens, position embeddings, biases and norms are exempt from weight decay; matrices are not.
    assert decay["backbone.model.cls_token"] == decay["backbone.model.pos_embed"] == 0.0
    assert decay["backbone.model.blocks.0.norm1.weight"] == decay["head.bias"] == 0.0
    assert decay["backbone.model.blocks.0.attn.qkv.weight"] == decay["head.weight"] == 0.05
    assert sum(len(g["params"]) for g in groups) == len(list(tiny_vit().parameters())) + 2
    # timm names of the other stem parameters; anything after the blocks goes with the final norm.
    assert [vit_layer_id(n, 12) for n in ("reg_token", "norm_pre.weight", "blocks.11.mlp.fc1.weight",
                                          "fc_norm.weight", "head.weight")] == [0, 0, 12, 13, 13]


def test_no_layer_decay_for_a_resnet():
    groups, applied = finetune_param_groups(tiny_resnet(), torch.nn.Linear(16, 4), layer_decay=0.5,
                                            weight_decay=0.05)
    assert not applied and {g["lr_scale"] for g in groups} == {1.0}


# -------------------------------------------------------------------------------------------- mixing
def test_mixup_blends_images_and_soft_targets_with_lambda():
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(6, 3, 8, 8, generator=g), torch.tensor([0, 1, 2, 3, 0, 1])
    targets = soft_targets(labels, 4, smoothing=0.1)
    assert torch.allclose(targets.sum(1), torch.ones(6))
    assert targets[0].tolist() == pytest.approx([0.925, 0.025, 0.025, 0.025])
    mixed, mixed_targets = mixup(images, targets, 0.3)
    assert torch.allclose(mixed, 0.3 * images + 0.7 * images.flip(0))
    assert torch.allclose(mixed_targets.sum(1), torch.ones(6))
    # Sample 0 is mixed with sample 5 (label 1): 0.3 of its own label, 0.7 of its partner's, plus smoothing.
    assert mixed_targets[0].tolist() == pytest.approx([0.3 * 0.925 + 0.7 * 0.025, 0.3 * 0.025 + 0.7 * 0.925,
                                                       0.025, 0.025])


def test_cutmix_lambda_is_the_area_the_sample_kept():
    own, partner = torch.zeros(1, 3, 10, 12), torch.ones(1, 3, 10, 12)
    images = torch.cat([own, partner])  # sample 0's partner is sample 1 (the reversed batch)
    targets = soft_targets(torch.tensor([0, 1]), 2)
    rng = np.random.default_rng(0)
    clipped = 0
    for lam in np.linspace(0.05, 0.95, 40):
        mixed, mixed_targets, kept = cutmix(images, targets, float(lam), rng)
        pasted = float(mixed[0].mean())  # the fraction of sample 0 that now comes from its partner
        assert kept == pytest.approx(1 - pasted)
        assert mixed_targets[0].tolist() == pytest.approx([kept, 1 - kept])
        assert torch.allclose(mixed_targets.sum(1), torch.ones(2))
        assert torch.equal(mixed[1], 1 - mixed[0])  # the same box, pasted the other way
        clipped += not math.isclose(kept, lam, abs_tol=0.1)
    assert clipped > 0  # boxes near the border are clipped: the sampled lambda alone would be wrong


def test_mix_batch_switches_between_mixup_and_cutmix():
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    plain, plain_targets = mix_batch(images, labels, 4, mixup_alpha=0, cutmix_alpha=0, smoothing=0, rng=None)
    assert plain is images and torch.equal(plain_targets, torch.eye(4))
    rng, kinds = np.random.default_rng(0), set()
    for _ in range(20):
        mixed, targets = mix_batch(images, labels, 4, mixup_alpha=0.8, cutmix_alpha=1.0, smoothing=0.1, rng=rng)
        assert torch.allclose(targets.sum(1), torch.ones(4))
        own = targets[0, 0] - 0.025  # the weight on the sample's own label (smoothing 0.1 / 4 classes aside)
        is_mixup = torch.allclose(mixed, own / 0.9 * images + (1 - own / 0.9) * images.flip(0), atol=1e-5)
        kinds.add("mixup" if is_mixup else "cutmix")
    assert kinds == {"mixup", "cutmix"}


# ---------------------------------------------------------------------------------- seeds and side effects
def test_same_seed_same_result_and_the_backbone_is_untouched(squares):
    noisy = DataSplits(train=coloured_squares(8, seed=2, noise=120), test=coloured_squares(16, seed=3, noise=120))
    backbone = tiny_resnet()
    backbone.train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    rng_before = torch.get_rng_state()
    settings = FinetuneSettings(epochs=2, batch_size=8, mixup=0.8, cutmix=1.0)
    first = finetune(backbone, noisy, settings=settings, seed=3, **IMAGES)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is not consumed
    assert first == finetune(backbone, noisy, settings=settings, seed=3, **IMAGES)
    lin = linear_sgd(backbone, noisy, settings=LinearSGDSettings(epochs=2, batch_size=8), seed=3, **IMAGES)
    assert lin == linear_sgd(backbone, noisy, settings=LinearSGDSettings(epochs=2, batch_size=8), seed=3, **IMAGES)
    assert 0 < first["finetune_top1"] < 1 and 0 < lin["linear_sgd_top1"] < 1  # a hard task: sensitive to the seed
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    assert backbone.training and all(p.requires_grad for p in backbone.parameters())


# ------------------------------------------------------------------------------------ protocol and config
def test_image_protocols_in_evaluate_backbone_and_the_record(squares):
    settings = ProtocolSettings(protocols=("finetune", "linear_sgd"),
                                options={"finetune": FinetuneSettings(epochs=1, batch_size=32),
                                         "linear_sgd": LinearSGDSettings(epochs=1, batch_size=32)})
    results = evaluate_backbone(tiny_resnet(), squares, settings=settings, log=lambda message: None, **IMAGES)
    assert set(results) == {"pretrained", "random_init", "raw_pixels"}
    assert set(results["pretrained"]) == set(results["random_init"]) == {
        "finetune_top1", "finetune_layer_decay", "linear_sgd_top1"}
    assert set(results["raw_pixels"]) == {"linear_sgd_top1"}  # nothing to fine-tune on raw pixels
    table = format_table(results)
    assert "finetune " in table and "linear_sgd " in table and "layer_decay" not in table
    record = settings.record()
    assert record["protocols"] == ["finetune", "linear_sgd"]
    assert record["finetune"]["epochs"] == 1 and record["finetune"]["layer_decay"] == 0.75
    assert record["finetune"]["crop_scale"] == [0.5, 1.0] and record["linear_sgd"]["lr"] == 0.1
    assert record["linear_sgd"]["seed"] == record["finetune"]["seed"] == 0
    with_mixup = dataclasses.replace(settings, options={
        **settings.options, "finetune": settings.of("finetune").model_copy(update={"mixup": 0.8})})
    assert with_mixup.record()["finetune"] != record["finetune"]  # compare sees the difference
    assert with_mixup.record()["linear_sgd"] == record["linear_sgd"]
    # Feature and image protocols together.
    both = evaluate_backbone(tiny_resnet(), squares, baselines=False, log=lambda message: None, **IMAGES,
                             settings=ProtocolSettings(protocols=("knn", "linear_sgd"), options={"knn": {"k": [5]}}))
    assert set(both["pretrained"]) == {"knn_top1@5", "linear_sgd_top1"}


def test_eval_config_keys_of_the_image_protocols():
    assert ProtocolSettings.from_eval_config(EvalConfig(), 0) == ProtocolSettings()  # same defaults both places
    cfg = build_config("demo", ["eval.protocols=[knn,finetune,linear_sgd]", "eval.finetune.epochs=1",
                                "eval.finetune.mixup=0.8", "eval.finetune.cutmix=1.0", "eval.linear_sgd.lr=0.5"])
    settings = ProtocolSettings.from_eval_config(cfg.eval, 7)
    assert settings.protocols == ("knn", "finetune", "linear_sgd") and settings.seed == 7
    tuned, linear = settings.of("finetune"), settings.of("linear_sgd")
    assert (tuned.epochs, tuned.mixup, tuned.cutmix) == (1, 0.8, 1.0)
    assert linear.lr == 0.5 and linear.epochs == LinearSGDSettings().epochs
    for bad in ("eval.finetune.layer_decay=0", "eval.finetune.layer_decay=1.5", "eval.finetune.mixup=-1",
                "eval.finetune.lr=0", "eval.linear_sgd.epochs=0", "eval.finetune.label_smoothing=1",
                "eval.finetune.crop_scale=[0.9,0.5]"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            build_config("demo", [bad])
    with pytest.raises(ValueError, match="layer_decay"):
        FinetuneSettings(layer_decay=0)
