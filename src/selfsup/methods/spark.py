"""SparK: Tian, Jiang, Zhang, Wang, Lu, Yuan, Luo, "Designing BERT for Convolutional Networks: Sparse and
Hierarchical Masked Modeling", ICLR 2023 (arXiv:2301.03580).

Masked image modelling for ConvNets (``small_resnet``, torchvision ResNets):

1. masking: the data workers mask ``mask_ratio`` (60%) of the patches of the backbone's total stride (one patch
   per cell of its last feature map), any registered patch-mask strategy (``mask``);
2. sparse encoder: the backbone runs as a sparse ConvNet on the visible patches only
   (:func:`~selfsup.methods.parts.sparse.sparse_masking`: masked regions zero after every convolution and
   pooling, BatchNorm over visible positions), so the masked regions' statistics never enter, unlike pixel-space
   masking (SimMIM on a ConvNet), which shows the network a pattern of flat squares it never sees again;
3. hierarchical decoder: the feature map at the end of every resolution (:func:`stage_features`) is projected
   ("densified") and its masked positions filled with a learned mask embedding of that scale; a light U-Net
   decoder goes from the deepest to the shallowest scale (upsample x2, add the next scale, two 3x3 convolutions),
   then to the input resolution, and predicts the pixels;
4. loss: MSE on the masked patches' per-patch normalised pixels (as MAE).

The exported backbone is the encoder (dense again at evaluation: nothing of it is sparse-specific).
Per-sample means: DDP's gradient averaging makes them global; the sparse BatchNorm reads this rank's batch.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.backbones.feature_maps import stage_features
from selfsup.backbones.vit import patch_mask_to_pixels, patchify, unpatchify
from selfsup.losses import masked_patch_mse
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.methods.mae import plain_crop
from selfsup.methods.parts.sparse import sparse_masking
from selfsup.views import MaskSpec, ViewSpec
from selfsup.views.mask_shapes import patch_mask_strategy
from selfsup.views.masks import draw_masks


class SparKOptions(MethodOptions):
    mask_ratio: float = Field(0.6, gt=0, lt=1)
    mask: str = "random"
    mask_options: dict[str, Any] = Field(default_factory=dict)
    decoder_width: int = Field(64, ge=4)  # channels at every decoder scale (the paper halves them per scale)
    normalize_target: bool = True
    crop_scale: tuple[float, float] = (0.67, 1.0)
    probe_size: int = Field(64, ge=8)  # pixels of the blank image that measures the stages' strides


def _conv_block(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                         nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))


@torch.no_grad()
def stage_shapes(backbone: nn.Module, channels: int, probe: int) -> list[tuple[int, int]]:
    """(channels, stride) of every stage of ``backbone`` on a blank ``probe`` px image (eval mode)."""
    was_training = backbone.training
    backbone.eval()
    maps = stage_features(backbone, torch.zeros(1, channels, probe, probe))
    backbone.train(was_training)
    return [(int(m.shape[1]), probe // m.shape[-1]) for m in maps]


@METHODS.register("spark")
class SparK(Method):
    Options = SparKOptions
    test_options = {"decoder_width": 8}

    def __init__(self, backbone: nn.Module, options: SparKOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        channels = backbone.spec.get("in_channels", 3)
        shapes = stage_shapes(backbone, channels, options.probe_size)
        self.stride = shapes[-1][1]
        width = options.decoder_width
        self.densify = nn.ModuleList(nn.Conv2d(c, width, 1) for c, _ in shapes)
        self.mask_embeddings = nn.Parameter(torch.zeros(len(shapes), width))
        nn.init.trunc_normal_(self.mask_embeddings, std=0.02)
        self.blocks = nn.ModuleList(_conv_block(width) for _ in shapes)
        self.head = nn.Conv2d(width, channels, 1)
        strategy = patch_mask_strategy(options.mask, options.mask_ratio, (4, 4), "SparK", **options.mask_options)
        self.views = ViewSpec(crops=(plain_crop(options.crop_scale),),
                              masks=MaskSpec(strategy, patch_size=self.stride, views=0))

    def decode(self, maps: list[torch.Tensor], hidden: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Pixels (B, C, H, W) from the sparse stage maps (shallowest first) and the (B, 1, h, w) hidden mask."""
        x = None
        for scale in reversed(range(len(maps))):
            dense = self.densify[scale](maps[scale])
            at_scale = F.interpolate(hidden, size=dense.shape[-2:], mode="nearest") > 0.5
            token = self.mask_embeddings[scale].to(dense.dtype)[None, :, None, None]
            dense = torch.where(at_scale, token.expand_as(dense), dense)  # SparK: fill the holes with mask tokens
            if x is not None:
                dense = dense + F.interpolate(x, size=dense.shape[-2:], mode="bilinear", align_corners=False)
            x = self.blocks[scale](dense)
        return self.head(F.interpolate(x, size=size, mode="bilinear", align_corners=False))

    def predict(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixels (B, C, H, W), the last feature map) for a (B, N) patch mask on the backbone's stride."""
        grid = (images.shape[-2] // self.stride, images.shape[-1] // self.stride)
        if grid[0] * grid[1] != mask.shape[1]:
            raise ValueError(f"SparK masks patches of the backbone's stride ({self.stride} px): views of "
                             f"{tuple(images.shape[-2:])} px need {grid[0] * grid[1]} patches, the mask has "
                             f"{mask.shape[1]}")
        hidden = mask.view(len(images), 1, *grid).to(images.dtype)
        keep = 1 - hidden
        with sparse_masking(self.backbone, keep):
            maps = stage_features(self.backbone, images * F.interpolate(keep, size=images.shape[-2:], mode="nearest"))
        return self.decode(maps, hidden, tuple(images.shape[-2:])), maps[-1]

    def forward(self, batch: dict) -> StepOutput:
        images, mask = batch["views"][0], batch["masks"]["mask"]
        pred, last = self.predict(images, mask)
        loss = masked_patch_mse(patchify(pred, self.stride), patchify(images, self.stride), mask,
                                normalize_target=self.options.normalize_target)
        keep = (~mask).float().view(len(images), 1, *last.shape[-2:])
        pooled = (last.detach() * keep).sum(dim=(2, 3)) / keep.sum(dim=(2, 3)).clamp_min(1)
        return StepOutput(loss=loss, embeddings=pooled)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
        """Input, masked input (hidden patches at 0, the dataset mean) and reconstruction (predictions pasted
        into the hidden patches; with normalised targets their per-patch mean and std come from the input)."""
        sizes = [images.shape[-1]]
        mask = torch.stack([draw_masks(self.views.masks, sizes, seed, 0, i)["mask"] for i in range(len(images))])
        mask = mask.to(images.device)
        pred, _ = self.predict(images, mask)
        grid = (images.shape[-2] // self.stride, images.shape[-1] // self.stride)
        pixel_mask = patch_mask_to_pixels(mask, self.stride, grid)
        if self.options.normalize_target:
            target, out = patchify(images, self.stride), patchify(pred.float(), self.stride)
            out = out * (target.var(-1, keepdim=True) + 1e-6).sqrt() + target.mean(-1, keepdim=True)
            pred = unpatchify(out, self.stride, grid)
        return {"input": images, "masked": images.masked_fill(pixel_mask, 0.0),
                "reconstruction": torch.where(pixel_mask, pred.float(), images)}
