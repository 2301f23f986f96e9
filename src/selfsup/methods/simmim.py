"""SimMIM: Xie, Zhang, Cao, Lin, Bao, Yao, Dai, Hu, "SimMIM: A Simple Framework for Masked Image Modeling",
CVPR 2022 (arXiv:2111.09886).

Masked image modelling reduced to its parts, each the simplest that works (paper, section 3):

1. masking: random masking of large square mask patches (32 px on 192 px images; here 8 px on 32 px), 60% of
   them, drawn per sample in the data workers;
2. encoder: the whole image goes in, hidden content replaced by a learnable mask. On a ViT the masked patch
   embeddings are replaced by a mask token (before the position embedding); on a ConvNet, which has no
   tokens, the masked pixels are replaced by a learnable value per channel, i.e. masking in pixel space;
3. prediction head: one linear layer (a 1 x 1 convolution) from the last feature map to stride x stride x C
   values per location, rearranged to pixels (pixel shuffle) at the input resolution;
4. loss: L1 on the raw (normalized-input) pixels of the masked area only
   (:func:`~selfsup.losses.masked_pixel_l1`).

Like MAE the augmentation is a mild random resized crop and a flip; unlike MAE the encoder sees every
position (mask tokens included), so any backbone with a feature map works.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.backbones.vit import patch_mask_to_pixels
from selfsup.losses import masked_pixel_l1
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.methods.mae import plain_crop
from selfsup.views import MaskSpec, RandomMask, ViewSpec
from selfsup.views.mask_shapes import patch_mask_strategy
from selfsup.views.masks import draw_masks


class SimMIMOptions(MethodOptions):
    mask_ratio: float = Field(0.6, gt=0, lt=1)
    mask_patch_size: int = Field(8, ge=1)  # pixels; a multiple of a ViT's patch size
    crop_scale: tuple[float, float] = (0.67, 1.0)  # the paper's RandomResizedCrop scale
    # Any registered patch-mask strategy (selfsup.views.masks) at mask_ratio, with its own options: "random" is
    # the paper's; others are drawn on the grid of mask_patch_size squares (ConvNets) or of the ViT's patches.
    mask: str = "random"
    mask_options: dict[str, Any] = Field(default_factory=dict)


def feature_stride(backbone: nn.Module, channels: int, probe: int = 64) -> tuple[int, int]:
    """(stride, width) of a ConvNet's last feature map, measured on a blank ``probe``-pixel image (eval mode,
    so BatchNorm statistics are untouched)."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        fmap = backbone.forward_features(torch.zeros(1, channels, probe, probe))
    backbone.train(was_training)
    if fmap.ndim != 4 or probe % fmap.shape[-1]:
        raise ValueError(f"SimMIM needs a feature map (B, C, h, w) at an integer stride, got {tuple(fmap.shape)} "
                         f"for a {probe} px input")
    return probe // fmap.shape[-1], int(fmap.shape[1])


@METHODS.register("simmim")
class SimMIM(Method):
    Options = SimMIMOptions
    test_options = {"mask_patch_size": 8}  # on the small ResNet (pixel-space masking); ViT: test_masked_methods.py

    def __init__(self, backbone: nn.Module, options: SimMIMOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        self.is_vit = hasattr(backbone, "forward_tokens")
        channels = backbone.spec.get("in_channels", 3)
        unit = options.mask_patch_size
        if self.is_vit:
            p = backbone.patch_size
            if unit % p:
                raise ValueError(f"SimMIM's mask_patch_size ({unit} px) must be a multiple of the ViT's patch "
                                 f"size ({p} px)")
            self.stride, width = p, backbone.embed_dim
            self.mask_token = nn.Parameter(torch.zeros(width))
            nn.init.trunc_normal_(self.mask_token, std=0.02)
            # the mask lives on the ViT's patch grid, in squares of (unit / p)^2 patches
            strategy = (RandomMask(options.mask_ratio, unit=unit // p, **options.mask_options)
                        if options.mask == "random" else
                        patch_mask_strategy(options.mask, options.mask_ratio, backbone.grid_size, "SimMIM",
                                            **options.mask_options))
            masks = MaskSpec(strategy, patch_size=p)
        else:
            if not hasattr(backbone, "forward_features"):
                raise ValueError(f"SimMIM needs a ViT or a backbone with forward_features (a feature map); "
                                 f"{type(backbone).__name__} has neither")
            self.stride, width = feature_stride(backbone, channels)
            self.mask_value = nn.Parameter(torch.zeros(channels))  # 0 = the dataset mean after normalization
            masks = MaskSpec(patch_mask_strategy(options.mask, options.mask_ratio, (32 // unit or 1,) * 2, "SimMIM",
                                                 **options.mask_options), patch_size=unit)
        self.head = nn.Sequential(nn.Conv2d(width, self.stride ** 2 * channels, kernel_size=1),
                                  nn.PixelShuffle(self.stride))
        self.views = ViewSpec(crops=(plain_crop(options.crop_scale),), masks=masks)

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(predicted pixels (B, C, H, W), pixel mask (B, 1, H, W), pooled features) for a (B, N) patch mask."""
        p = self.views.masks.patch_size
        grid = (images.shape[-2] // p, images.shape[-1] // p)
        pixel_mask = patch_mask_to_pixels(mask, p, grid)
        if self.is_vit:
            tokens = self.backbone.forward_tokens(images, mask=mask, mask_token=self.mask_token)
            fmap = tokens["patches"].transpose(1, 2).reshape(len(images), -1, *grid)
            with torch.no_grad():
                pooled = self.backbone.pool(tokens)
        else:
            value = self.mask_value.view(1, -1, 1, 1).to(images.dtype)
            fmap = self.backbone.forward_features(torch.where(pixel_mask, value, images))
            pooled = fmap.detach().mean(dim=(2, 3))
        pred = self.head(fmap)
        if pred.shape != images.shape:
            raise ValueError(f"SimMIM's head gives {tuple(pred.shape[-2:])} px from a {tuple(images.shape[-2:])} px "
                             f"input: use an image size that is a multiple of the backbone's stride {self.stride}")
        return pred, pixel_mask, pooled

    def forward(self, batch: dict) -> StepOutput:
        images = batch["views"][0]
        pred, pixel_mask, pooled = self.encode(images, batch["masks"]["mask"])
        return StepOutput(loss=masked_pixel_l1(pred, images, pixel_mask), embeddings=pooled)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
        """Rows of a picture for (B, C, H, W) normalized images: input, masked input (hidden pixels at 0, the
        dataset mean) and reconstruction (predictions on the masked area, the input elsewhere); masks from
        the method's own strategy, seeded by (``seed``, image position)."""
        sizes = [images.shape[-1]] * self.views.num_views
        mask = torch.stack([draw_masks(self.views.masks, sizes, seed, 0, i)["mask"] for i in range(len(images))])
        pred, pixel_mask, _ = self.encode(images, mask.to(images.device))
        return {"input": images, "masked": images.masked_fill(pixel_mask, 0.0),
                "reconstruction": torch.where(pixel_mask, pred.float(), images)}
