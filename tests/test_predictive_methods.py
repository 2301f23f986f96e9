"""I-JEPA, iBOT and LeJEPA wiring: each method's loss equals the same loss recomputed here step by step (per view,
per target block, with explicit loops for the gathers), so masks, context and targets reach the right tensors.
The generic checks (a training step, state dict, recipe) are in test_methods.py."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfsup.backbones import build_backbone
from selfsup.data.sources import ArraySource
from selfsup.views.dataset import ViewCollate, ViewDataset
from selfsup.views.preprocess import Preprocess
from selfsup.losses import dino_loss, latent_prediction_loss, masked_patch_distillation, sigreg, view_prediction_loss
from selfsup.losses.sigreg import sigreg_directions
from selfsup.methods import build_method

SIZE, BATCH = 16, 6


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(0)
    return ArraySource((rng.random((16, 3, SIZE, SIZE)) * 255).astype(np.uint8))


def build(name, options, vit=True):
    torch.manual_seed(0)
    backbone = (build_backbone("vit_micro_cpu", 3, img_size=SIZE, embed_dim=32, depth=2, num_heads=2) if vit
                else build_backbone("small_resnet", 3, widths=[8, 8, 16, 16], stem_stride=1))
    return build_method(name, backbone, options)


def batch_for(method, source):
    dataset = ViewDataset(source, method.views, SIZE, seed=0)
    return ViewCollate(Preprocess(SIZE, [0.5] * 3, [0.25] * 3))([dataset[(0, i)] for i in range(BATCH)])


def test_ijepa_encodes_the_context_and_predicts_the_layer_normed_targets_of_the_full_image(source):
    method = build("ijepa", {"predictor_dim": 16, "predictor_depth": 1, "predictor_heads": 2, "loss": "l2"})
    with torch.no_grad():  # a target encoder different from the context encoder, as after some EMA steps
        for p in method.target_backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = batch_for(method, source)
    image, context, targets = batch["views"][0], batch["masks"]["context"], batch["masks"]["targets"]
    assert context.shape == (BATCH, 8) and targets.shape == (BATCH, 4, 2)  # 4 x 4 grid: 4 targets of 2, context 8
    out = method(batch)

    with torch.no_grad():
        full = method.target_backbone.forward_tokens(image)["patches"]
        full = F.layer_norm(full, full.shape[-1:])
        expected_targets = torch.stack([torch.stack([torch.stack([full[b, i] for i in block]) for block in targets[b]])
                                        for b in range(BATCH)])  # (B, M, K_t, D) with loops
        # the context encoder on the context patches only equals the full encoder with attention restricted to them
        visible = torch.stack([method.backbone.embed_patches(image[b:b + 1])[0, context[b]] for b in range(BATCH)])
        encoded = method.backbone.forward_blocks(visible)["patches"]
        predictions = method.predictor(encoded, context, targets, (4, 4))
    assert out.loss.item() == pytest.approx(((predictions - expected_targets) ** 2).mean().item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(latent_prediction_loss(predictions, expected_targets, "l2").item(), rel=1e-5)


def test_ijepa_predictor_blocks_are_independent_and_follow_the_target_order():
    method = build("ijepa", {"predictor_dim": 16, "predictor_depth": 2, "predictor_heads": 2})
    gen = torch.Generator().manual_seed(0)
    context = torch.randn(2, 5, 32, generator=gen)
    context_indices = torch.stack([torch.randperm(16, generator=gen)[:5] for _ in range(2)])
    targets = torch.randint(16, (2, 3, 4), generator=gen)
    out = method.predictor(context, context_indices, targets, (4, 4))
    assert out.shape == (2, 3, 4, 32)
    swapped = method.predictor(context, context_indices, targets[:, [2, 0, 1]], (4, 4))
    assert torch.allclose(swapped, out[:, [2, 0, 1]], atol=1e-5)  # a block never sees another block's queries
    alone = method.predictor(context, context_indices, targets[:, 1:2], (4, 4))
    assert torch.allclose(alone[:, 0], out[:, 1], atol=1e-5)


def test_ijepa_momentum_rises_linearly_and_needs_a_vit():
    method = build("ijepa", {"predictor_dim": 16, "predictor_depth": 1, "predictor_heads": 2, "momentum": 0.99})
    method.on_step(0.5)
    assert method.momentum == pytest.approx(0.995)
    method.on_step(1.0)
    assert method.momentum == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs a ViT"):
        build("ijepa", {}, vit=False)


def test_ibot_loss_is_dino_on_class_tokens_plus_masked_patch_distillation_per_view(source):
    options = {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16, "num_local_crops": 2, "local_size": 8,
               "lambda2": 0.7, "warmup_teacher_patch_temperature": 0.06}
    method = build("ibot", options)
    with torch.no_grad():
        method.mask_token.normal_()
        method.center.normal_()
        method.patch_center.normal_()
    method.eval()  # centres stay as they are
    batch = batch_for(method, source)
    masks = batch["masks"]["mask"]
    assert masks.shape == (BATCH, 2, 16) and (masks.sum(dim=-1) == 5).all()  # round(0.3 * 16) per global crop
    out = method(batch)

    with torch.no_grad():
        student_cls, student_patches, teacher_cls, teacher_patches = [], [], [], []
        for v in range(2):  # each global crop on its own
            tokens = method.backbone.forward_tokens(batch["views"][v], mask=masks[:, v], mask_token=method.mask_token)
            student_cls.append(method.head(tokens["cls"]))
            student_patches.append(method.head(tokens["patches"]))
            teacher = method.teacher_backbone.forward_tokens(batch["views"][v])
            teacher_cls.append(method.teacher_head(teacher["cls"]))
            teacher_patches.append(method.teacher_head(teacher["patches"]))
        local = [method.head(method.backbone(view)) for view in batch["views"][2:]]
        cls_loss = dino_loss(student_cls + local, teacher_cls, method.center, 0.1, 0.04)
        patch_loss = masked_patch_distillation(student_patches, teacher_patches, [masks[:, 0], masks[:, 1]],
                                               method.patch_center, 0.1, 0.06)
    assert out.metrics["cls_loss"] == pytest.approx(cls_loss.item(), rel=1e-4)
    assert out.metrics["patch_loss"] == pytest.approx(patch_loss.item(), rel=1e-4)
    assert out.loss.item() == pytest.approx(cls_loss.item() + 0.7 * patch_loss.item(), rel=1e-4)


def test_ibot_separate_patch_head_trains_and_updates_both_centres(source):
    method = build("ibot", {"out_dim": 32, "patch_out_dim": 24, "shared_head": False, "hidden_dim": 32,
                            "bottleneck_dim": 16, "num_local_crops": 0})
    method.train()
    out = method(batch_for(method, source))
    out.loss.backward()
    assert method.patch_head.last_layer.grad is not None and method.patch_center.shape == (1, 24)
    assert method.center.abs().sum() > 0 and method.patch_center.abs().sum() > 0
    method.before_optimizer_step(0.0)  # the first epoch: both heads' prototypes stay still
    assert method.head.last_layer.grad is None and method.patch_head.last_layer.grad is None
    method.on_step(1.0)
    assert method.teacher_patch_temperature == pytest.approx(0.07)


@pytest.mark.parametrize("vit", [True, False])
def test_lejepa_loss_is_the_weighted_sum_and_directions_follow_the_step(source, vit):
    options = {"num_slices": 16, "projector_hidden_dim": 32, "num_local_crops": 2, "local_size": 8, "lambd": 0.3}
    method = build("lejepa", options, vit=vit)
    method.eval()  # BN in eval: the same embeddings twice
    batch = batch_for(method, source)
    out = method(batch)
    with torch.no_grad():
        z = torch.stack([method.projector(method.backbone(view)) for view in batch["views"]])
        expected = 0.7 * view_prediction_loss(z, 2) + 0.3 * sigreg(z, sigreg_directions(16, 16, step=0))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-4)
    method.after_optimizer_step(0.1)
    assert int(method.state_dict()["step"]) == 1  # checkpoints hold it: a resume draws the same directions
    moved = method(batch)
    assert moved.metrics["prediction_loss"] == pytest.approx(out.metrics["prediction_loss"], rel=1e-6)
    assert moved.metrics["sigreg"] != pytest.approx(out.metrics["sigreg"], rel=1e-6)  # new directions
