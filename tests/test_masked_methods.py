"""Masked image modelling methods (MAE, SimMIM, CMAE) beyond the parametrized contract of test_methods.py: what
the encoder sees, where the mask goes (ViT tokens, ConvNet pixels), the MAE decoder's token placement, weight
decay exemptions, and the reconstruction picture a run leaves behind."""
import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.artifacts import RECONSTRUCTIONS_FILE, image_grid
from selfsup.backbones import build_backbone
from selfsup.backbones.vit import patch_mask_to_pixels, patchify, sincos_pos_embed_2d
from selfsup.data.sources import ArraySource
from selfsup.views.dataset import ViewCollate, ViewDataset
from selfsup.views.preprocess import Preprocess
from selfsup.engine.optim import param_groups
from selfsup.heads.mae_decoder import MAEDecoder
from selfsup.losses import info_nce
from selfsup.methods import build_method
from selfsup.methods.mae import encode_visible

SIZE, BATCH = 16, 6
MAE_TINY = {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}


def tiny_vit(seed=0, **options):
    torch.manual_seed(seed)
    return build_backbone("vit_micro_cpu", 3, img_size=SIZE, embed_dim=32, depth=2, num_heads=2, **options)


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(0)
    return ArraySource((rng.random((16, 3, SIZE, SIZE)) * 255).astype(np.uint8))


def make_batch(method, source, size=SIZE):
    dataset = ViewDataset(source, method.views, size, seed=0)
    return ViewCollate(Preprocess(size, [0.5] * 3, [0.25] * 3))([dataset[(0, i)] for i in range(BATCH)])


# ------------------------------------------------------------------------------------------------------- MAE
def test_mae_encoder_never_sees_the_masked_patches(source):
    method = build_method("mae", tiny_vit(), MAE_TINY).eval()
    batch = make_batch(method, source)
    images, masks = batch["views"][0], batch["masks"]
    assert masks["mask"].sum(dim=1).tolist() == [12] * BATCH  # 75% of 4 x 4, the same count for every sample
    lengths = []
    hook = method.backbone.model.blocks[0].register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[1]))
    pred, _ = method.predict(images, masks["visible"])
    hook.remove()
    assert lengths == [1 + 4]  # class token + the 4 visible patches
    assert pred.shape == (BATCH, 16, 4 * 4 * 3)
    # Changing the pixels of masked patches changes nothing the model computes, only the loss target.
    hidden = patch_mask_to_pixels(masks["mask"], 4, (4, 4))
    scrambled = torch.where(hidden, torch.randn_like(images), images)
    pred_scrambled, _ = method.predict(scrambled, masks["visible"])
    assert torch.equal(pred, pred_scrambled)
    assert method({"views": [scrambled], "masks": masks}).loss != method(batch).loss


def test_mae_loss_is_the_masked_patch_mse_of_its_predictions(source):
    method = build_method("mae", tiny_vit(), {**MAE_TINY, "normalize_target": False})
    batch = make_batch(method, source)
    images, mask = batch["views"][0], batch["masks"]["mask"]
    pred, _ = method.predict(images, batch["masks"]["visible"])
    error = (pred - patchify(images, 4)).pow(2).mean(dim=-1)
    assert torch.allclose(method(batch).loss, error[mask].mean(), atol=1e-6)


def test_mae_decoder_puts_each_token_at_its_patch():
    torch.manual_seed(0)
    decoder = MAEDecoder(encoder_dim=8, out_dim=5, grid_size=(3, 3), dim=8, depth=1, num_heads=2).eval()
    visible = torch.tensor([[7, 0, 4], [2, 8, 5]])
    x = torch.randn(2, 3, 8)
    seen = []
    hook = decoder.blocks.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    out = decoder(x, visible, (3, 3))
    hook.remove()
    tokens, pos = seen[0], sincos_pos_embed_2d(8, (3, 3))
    for b in range(2):
        for n in range(9):
            at = visible[b].tolist()
            expected = decoder.embed(x[b, at.index(n)]) if n in at else decoder.mask_token[0, 0]
            assert torch.allclose(tokens[b, n], expected + pos[n], atol=1e-6), (b, n)
    # the order of the visible tokens does not matter, only their indices
    order = torch.tensor([2, 0, 1])
    assert torch.allclose(decoder(x[:, order], visible[:, order], (3, 3)), out, atol=1e-6)
    # another grid: positions are recomputed, shapes follow
    assert decoder(x, visible, (4, 4)).shape == (2, 16, 5)


def test_mae_refuses_a_convnet_with_a_clear_message():
    with pytest.raises(ValueError, match="needs a ViT backbone.*small_resnet"):
        build_method("mae", build_backbone("small_resnet", 3, widths=[8, 8, 8, 8]), MAE_TINY)


def test_vit_embeddings_and_tokens_are_exempt_from_weight_decay():
    method = build_method("mae", tiny_vit(reg_tokens=1), MAE_TINY)
    decay, no_decay = param_groups(method, weight_decay=0.05, exclude_bias_and_norm=True)
    names = {id(p): n for n, p in method.named_parameters()}
    exempt = {names[id(p)] for p in no_decay["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    for name in ("backbone.model.pos_embed", "backbone.model.cls_token", "backbone.model.reg_token",
                 "decoder.mask_token", "backbone.model.blocks.0.norm1.weight", "decoder.embed.bias"):
        assert name in exempt, name
    for name in ("backbone.model.blocks.0.attn.qkv.weight", "backbone.model.patch_embed.proj.weight",
                 "decoder.pred.weight"):
        assert name in decayed, name
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    everything = param_groups(method, weight_decay=0.05, exclude_bias_and_norm=False)
    assert len(everything) == 1  # exemptions are off with exclude_bias_and_norm=False
    # fixed sin-cos positions are not trained at all
    fixed = build_method("mae", tiny_vit(sincos_pos_embed=True), MAE_TINY)
    assert not any("pos_embed" in n for n, p in fixed.named_parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------------- SimMIM
def test_simmim_on_a_vit_replaces_masked_patches_by_the_mask_token(source):
    method = build_method("simmim", tiny_vit(), {"mask_patch_size": 8})
    batch = make_batch(method, source)
    mask = batch["masks"]["mask"]
    # 8 px mask patches on 4 px ViT patches: whole 2 x 2 squares of patches; 60% of the 4 squares -> 2
    assert mask.sum(dim=1).tolist() == [8] * BATCH
    squares = mask.reshape(BATCH, 2, 2, 2, 2).permute(0, 1, 3, 2, 4).reshape(BATCH, 4, 4)
    assert torch.all((squares.sum(-1) == 0) | (squares.sum(-1) == 4))
    seen = []
    hook = method.backbone.model.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    out = method(batch)
    hook.remove()
    assert seen[0].shape[1] == 1 + 16  # every position enters the encoder
    expected = method.backbone.embed_patches(batch["views"][0], mask, method.mask_token)
    assert torch.allclose(seen[0][:, 1:], expected, atol=1e-6)
    out.loss.backward()
    assert method.mask_token.grad is not None and method.mask_token.grad.abs().sum() > 0
    assert method.head[0].weight.shape[0] == 4 * 4 * 3  # one linear layer to a ViT patch of pixels


def test_simmim_on_a_convnet_masks_pixels_and_reads_the_last_feature_map(source):
    torch.manual_seed(0)
    backbone = build_backbone("small_resnet", 3, widths=[8, 8, 16, 16], stem_stride=1)
    method = build_method("simmim", backbone, {"mask_patch_size": 4})
    assert method.stride == 8  # measured: stem stride 1, three stride-2 stages
    with torch.no_grad():
        method.mask_value.copy_(torch.tensor([3.0, -2.0, 7.0]))
    batch = make_batch(method, source)
    images, mask = batch["views"][0], batch["masks"]["mask"]
    assert mask.shape == (BATCH, 16) and mask.sum(dim=1).tolist() == [10] * BATCH  # 60% of 4 x 4 squares of 4 px
    seen = []
    hook = backbone.stem.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    out = method(batch)
    hook.remove()
    hidden = patch_mask_to_pixels(mask, 4, (4, 4)).expand_as(images)
    fill = torch.tensor([3.0, -2.0, 7.0]).view(1, 3, 1, 1).expand_as(images)
    assert torch.equal(seen[0][hidden], fill[hidden]) and torch.equal(seen[0][~hidden], images[~hidden])
    out.loss.backward()
    assert method.mask_value.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters())


@pytest.mark.parametrize("name,options,stride", [("small_resnet", {"widths": [8, 8, 8, 8], "stem_stride": 2}, 16),
                                                 ("resnet18", {"cifar_stem": True}, 8),
                                                 ("timm:resnet10t", {}, 32)])
def test_simmim_measures_the_stride_of_any_convnet(name, options, stride, source):
    torch.manual_seed(0)
    backbone = build_backbone(name, 3, **options)
    method = build_method("simmim", backbone, {"mask_patch_size": 8})
    assert method.stride == stride
    assert backbone.training  # the probe left the mode as it found it
    images = torch.randn(2, 3, 32, 32)
    pred, pixel_mask, pooled = method.encode(images, torch.zeros(2, 16, dtype=torch.bool))
    assert pred.shape == images.shape and pooled.shape == (2, backbone.num_features)


def test_simmim_refuses_a_mask_patch_that_is_not_a_multiple_of_the_vit_patch():
    with pytest.raises(ValueError, match="multiple of the ViT's patch size"):
        build_method("simmim", tiny_vit(), {"mask_patch_size": 6})


# ------------------------------------------------------------------------------------------------------ CMAE
def test_cmae_loss_is_reconstruction_plus_weighted_contrast(source):
    options = {**MAE_TINY, "feature_decoder_depth": 1, "projector_hidden_dim": 16, "projector_out_dim": 8,
               "contrastive_weight": 0.5, "temperature": 0.2}
    method = build_method("cmae", tiny_vit(), options).eval()  # eval: BN uses running stats, so calls agree
    batch = make_batch(method, source)
    assert [v.shape for v in batch["views"]] == [(BATCH, 3, SIZE, SIZE)] * 2
    assert batch["masks"]["mask"].shape == (BATCH, 16)
    out = method(batch)
    online, target = batch["views"]
    masks = batch["masks"]
    tokens, prefix, grid = encode_visible(method.backbone, online, masks["visible"])
    query = method.query(tokens, masks["visible"], prefix, grid)
    key = method.target_projector(method.target_backbone.forward_tokens(target)["patches"].mean(dim=1))
    contrastive = 2 * 0.2 * info_nce(query, key, temperature=0.2)
    assert out.metrics["contrastive"] == pytest.approx(contrastive.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(out.metrics["reconstruction"] + 0.5 * contrastive.item(), rel=1e-5)
    assert not method.target_backbone.model.cls_token.requires_grad


# ------------------------------------------------------------------------------------------- the picture
@pytest.mark.parametrize("name", ["mae", "simmim", "cmae"])
def test_reconstruct_rows(name, source):
    options = {"mask_patch_size": 8} if name == "simmim" else MAE_TINY
    method = build_method(name, tiny_vit(), options).eval()
    images = make_batch(method, source)["views"][0][:3]
    rows = method.reconstruct(images)
    assert list(rows) == ["input", "masked", "reconstruction"]
    assert all(r.shape == images.shape for r in rows.values())
    hidden = rows["masked"] != images
    assert hidden.any() and torch.equal(rows["reconstruction"][~hidden], images[~hidden])  # visible pasted back
    assert torch.equal(method.reconstruct(images)["masked"], rows["masked"])  # seeded masks


def test_image_grid_layout():
    rows = {"a": torch.zeros(5, 3, 16, 16), "b": torch.ones(5, 1, 16, 16)}
    grid = image_grid(rows, Preprocess(16, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]))
    assert grid.shape == (2 * (96 + 2) + 2, 5 * (96 + 2) + 2, 3) and grid.dtype == np.uint8
    assert grid[2, 2].tolist() == [128, 128, 128] and grid[100, 2].tolist() == [191, 191, 191]


@pytest.mark.slow
def test_a_tiny_mae_run_saves_its_reconstruction_grid(tmp_path):
    from selfsup.api import train

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", images=(rng.random((48, 16, 16, 3)) * 255).astype(np.uint8))
    run = train("mae", [f"runs_dir={tmp_path}", "name=mae", f"data.source={tmp_path / 'tiny.npz'}",
                        "data.image_size=16", "data.num_workers=0", "train.budget=null", "train.max_steps=2",
                        "train.batch_size=8", "train.progress=false", "eval.enabled=false",
                        "backbone.options={img_size: 16, embed_dim: 32, depth: 1, num_heads: 2}",
                        "method_options.decoder_dim=16", "method_options.decoder_heads=2",
                        "method_options.decoder_depth=1"])
    with Image.open(run / RECONSTRUCTIONS_FILE) as picture:
        # 8 held-out images (16 px cells enlarged 6x to 96 px) in 3 rows, 2 px borders
        assert picture.size == (8 * (96 + 2) + 2, 3 * (96 + 2) + 2) and picture.mode == "RGB"
