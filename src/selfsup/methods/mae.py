"""MAE: He, Chen, Xie, Li, Dollár, Girshick, "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022
(arXiv:2111.06377).

Hide most of the image, reconstruct it from the rest:

1. masking: the data workers draw ``mask_ratio`` (75%) of the patches uniformly per sample (``RandomMask``)
   and deliver the mask with the batch;
2. encoding: only the visible patches enter the ViT (token dropping): no mask tokens in the encoder, which
   is what makes it cheap (a quarter of the tokens) and keeps its input distribution the one it sees at
   evaluation, minus the missing patches;
3. decoding: a light transformer (:class:`~selfsup.heads.mae_decoder.MAEDecoder`) gets the encoded visible
   tokens plus a mask token at every hidden position, with fixed 2-D sin-cos positions, and predicts each
   patch's pixels;
4. loss: mean squared error on the masked patches only, against per-patch normalized pixels
   (:func:`~selfsup.losses.masked_patch_mse`).

The augmentation is just a random resized crop and a flip: masking is the task. The exported backbone is the
encoder; the decoder is thrown away.

Volumes (the recipe ``mae-3d``): with a 3-D ViT (:mod:`selfsup.backbones.vit3d`) the same method masks a 3-D
patch grid, ``mask: cube`` (75% of the 3-D patches) or ``mask: tube`` (75% of the (row, column) positions
through the whole depth, VideoMAE's tube masking: Tong et al., "VideoMAE", NeurIPS 2022), reconstructs
p^3-voxel patches and places the decoder's tokens with 3-D sin-cos positions; nothing else changes. ``reconstruct`` shows what the model learnt on held-out images (the run
saves it as ``reconstructions.png``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.backbones.vit3d import patchify_nd, unpatchify_nd
from selfsup.heads import MAEDecoder
from selfsup.losses import masked_patch_mse
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.views import CropSpec, MaskSpec, ViewSpec
from selfsup.views.mask_shapes import patch_mask_strategy
from selfsup.views.masks import draw_masks


class MAEOptions(MethodOptions):
    mask_ratio: float = Field(0.75, ge=0, lt=1)
    decoder_dim: int = Field(512, ge=4)  # the paper's decoder: 8 blocks of width 512 (section 4, table 1)
    decoder_depth: int = Field(8, ge=1)
    decoder_heads: int = Field(16, ge=1)
    normalize_target: bool = True  # per-patch normalized pixels (table 1c: better features)
    crop_scale: tuple[float, float] = (0.2, 1.0)  # random resized crop, no colour jitter (appendix A.1)
    # The mask strategy (selfsup.views.masks) at mask_ratio: "auto" is "random" on images, "cube" on volumes
    # (a 3-D backbone); "tube" masks (row, column) positions through the whole depth (VideoMAE); any registered
    # patch-mask strategy on images ("block", "colormae", "gmml", ...), with its own options in mask_options.
    mask: str = "auto"
    mask_options: dict[str, Any] = Field(default_factory=dict)  # e.g. {colour: red} for colormae


def encode_visible(backbone: nn.Module, images: torch.Tensor, visible: torch.Tensor):
    """The ViT on the ``visible`` (B, K) patches only: (tokens, prefix tokens (B, P, D) or None, patch grid)."""
    tokens = backbone.forward_tokens(images, keep_indices=visible)
    prefix = [t if t.ndim == 3 else t[:, None] for t in (tokens["cls"], tokens["registers"]) if t is not None]
    grid = backbone.grid_for(*images.shape[2:])  # (rows, columns), or (depth, rows, columns) for volumes
    return tokens, (torch.cat(prefix, dim=1) if prefix else None), grid


def plain_crop(scale: tuple[float, float], count: int = 1) -> CropSpec:
    """Random resized crop and flip, no photometric change (MAE and SimMIM's only augmentation)."""
    return CropSpec(count=count, scale=tuple(scale), jitter_p=0.0, grayscale_p=0.0)


@METHODS.register("mae")
class MAE(Method):
    Options = MAEOptions
    needs_vit = True
    test_options = {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}

    def __init__(self, backbone: nn.Module, options: MAEOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        self.patch_size = backbone.patch_size
        channels = backbone.spec.get("in_channels", 3)
        dims = len(backbone.grid_size)  # 2 for images, 3 for volumes
        self.decoder = MAEDecoder(backbone.embed_dim, self.patch_size ** dims * channels, backbone.grid_size,
                                  options.decoder_dim, options.decoder_depth, options.decoder_heads)
        mask = options.mask if options.mask != "auto" else ("cube" if dims == 3 else "random")
        if (mask in ("cube", "tube")) != (dims == 3):
            raise ValueError(f"method_options.mask={mask} is for {'volumes' if dims == 2 else 'images'}, but the "
                             f"backbone has a {dims}-D patch grid; use mask: auto")
        strategy = patch_mask_strategy(mask, options.mask_ratio, backbone.grid_size, "MAE", **options.mask_options)
        self.views = ViewSpec(crops=(plain_crop(options.crop_scale),),
                              masks=MaskSpec(strategy, patch_size=self.patch_size, views=0, dims=dims))

    def predict(self, images: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Encode the ``visible`` (B, K) patches of ``images`` only; decode every patch, (B, N, p * p * C)."""
        tokens, prefix, grid = encode_visible(self.backbone, images, visible)
        return self.decoder(tokens["patches"], visible, grid, prefix), tokens

    def forward(self, batch: dict) -> StepOutput:
        images, masks = batch["views"][0], batch["masks"]
        pred, tokens = self.predict(images, masks["visible"])
        loss = masked_patch_mse(pred, patchify_nd(images, self.patch_size), masks["mask"],
                                normalize_target=self.options.normalize_target)
        with torch.no_grad():  # what the collapse monitor watches: pooled features of the visible patches
            embeddings = self.backbone.pool(tokens)
        return StepOutput(loss=loss, embeddings=embeddings)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
        """Rows of a picture for (B, C, H, W) normalized images: input, masked input (hidden patches at 0, the
        dataset mean) and reconstruction (visible patches pasted back over the predictions), all (B, C, H, W).

        Masks come from the method's own strategy, seeded by (``seed``, image position). With normalized
        targets the predictions are per-patch standardized pixels, which the model cannot un-standardize: they
        are shown with each hidden patch's true mean and standard deviation borrowed from the input, so the
        picture shows the predicted structure within a patch, not its brightness (the paper's figures use a
        model trained on raw pixels instead: ``normalize_target=false``)."""
        return mae_reconstruction(self, images, seed, self.options.normalize_target)


def mae_reconstruction(method: nn.Module, images: torch.Tensor, seed: int, normalized: bool) -> dict[str, torch.Tensor]:
    """:meth:`MAE.reconstruct` for any method with MAE's ``views``, ``predict`` and ``patch_size`` (CMAE too).
    Volumes (B, C, D, H, W) are shown by their middle depth slice, so every row is (B, C, H, W)."""
    sizes = [images.shape[-1]] * method.views.num_views
    drawn = [draw_masks(method.views.masks, sizes, seed, 0, i) for i in range(len(images))]
    mask = torch.stack([d["mask"] for d in drawn]).to(images.device)
    visible = torch.stack([d["visible"] for d in drawn]).to(images.device)
    pred, _ = method.predict(images, visible)
    target = patchify_nd(images, method.patch_size)
    pred = pred.float()
    if normalized:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        pred = pred * (var + 1e-6).sqrt() + mean
    hidden = mask.unsqueeze(-1)
    grid = method.backbone.grid_for(*images.shape[2:])
    rows = {"input": images,
            "masked": unpatchify_nd(target.masked_fill(hidden, 0.0), method.patch_size, grid),
            "reconstruction": unpatchify_nd(torch.where(hidden, pred, target), method.patch_size, grid)}
    if images.ndim == 5:
        rows = {key: value[:, :, value.shape[2] // 2] for key, value in rows.items()}
    return rows
