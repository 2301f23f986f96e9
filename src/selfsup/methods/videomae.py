"""VideoMAE: Tong, Song, Wang, Wang, "VideoMAE: Masked Autoencoders are Data-Efficient Learners for
Self-Supervised Video Pre-Training", NeurIPS 2022 (arXiv:2203.12602); with ``decoder_mask_ratio > 0``, VideoMAE
V2's dual masking: Wang et al., "VideoMAE V2: Scaling Video Masked Autoencoders with Dual Masking", CVPR 2023
(arXiv:2303.16727).

MAE (:class:`~selfsup.methods.mae.MAE`) over a clip's tubelets, with the two choices that make it work on video
(paper, section 3):

1. tube masking at an extreme ratio (90%): the same (row, column) positions are hidden in every time step, so a
   hidden tubelet cannot be copied from the same place a few frames away (temporal redundancy), and the
   encoder, which sees only the visible 10%, is cheap;
2. reconstruction of the hidden tubelets' normalized pixels by a light decoder, MSE on the hidden ones only.

Dual masking (V2, section 3.2, ``decoder_mask_ratio``, the recipe ``videomae-v2``): the decoder also drops tokens.
Of the hidden tubelets, only ``1 - decoder_mask_ratio`` of all tokens' worth (running-cell pattern first,
:class:`~selfsup.views.video_masks.DualTubeMask`) get a mask token in the decoder and a loss; the decoder runs on
the visible tokens plus those, about half the tokens at 0.5, which is what lets the paper scale to billions of
parameters. With ``decoder_mask_ratio=0`` this is VideoMAE (V1) exactly: MAE with a tube mask.

On a 2-D patch grid (single frames, images) a tube is one step deep: MAE's random mask, with the same dual masking.
The views are clips (:mod:`selfsup.views.video`: ``data.image_size`` frames of ``data.image_size``^2 pixels,
``clip_stride`` frames apart, one random resized crop and flip for the whole clip, no colour change). The paper
samples 16 frames at a temporal stride of 2 (Something-Something V2) or 4 (Kinetics-400) (section 4); the default
2 also plays a clip at the speed of the evaluation view, which resamples a whole video to ``data.image_size``
frames (the 32-frame moving digits: stride 2). At stride 1 the encoder learns motion at half the speed it is
evaluated on.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.backbones.vit import gather_tokens
from selfsup.backbones.vit3d import patchify_nd
from selfsup.losses import masked_patch_mse
from selfsup.methods.base import METHODS, StepOutput
from selfsup.methods.mae import MAE, MAEOptions, encode_visible
from selfsup.views import MaskSpec
from selfsup.views.video import ClipSpec
from selfsup.views.video_masks import DualTubeMask


class VideoMAEOptions(MAEOptions):
    mask_ratio: float = Field(0.9, ge=0, lt=1)  # the paper's 90% (table 1a: 90% beats 75% on video)
    mask: Literal["tube", "cube"] = "tube"  # tube: the same positions hidden in every time step
    decoder_mask_ratio: float = Field(0.0, ge=0, lt=1)  # V2's dual masking: 0.5 (0 = VideoMAE V1)
    crop_scale: tuple[float, float] = (0.5, 1.0)  # multi-scale crop, no colour change
    clip_stride: int = Field(2, ge=1)  # frames between a clip's frames (the paper: 2 on SSv2, 4 on K400)


def decode_subset(decoder: nn.Module, visible: torch.Tensor, visible_indices: torch.Tensor, decoded: torch.Tensor,
                  grid: tuple[int, ...], prefix: torch.Tensor | None = None) -> torch.Tensor:
    """MAE's decoder on the visible tokens plus mask tokens at the ``decoded`` (B, M) positions only: predictions
    (B, M, out) for those (V2's decoder masking; the other hidden positions never enter the decoder)."""
    pos = decoder._pos(grid).expand(visible.shape[0], -1, -1).to(visible.dtype)
    x = decoder.embed(visible) + gather_tokens(pos, visible_indices)
    queries = decoder.mask_token.to(x.dtype) + gather_tokens(pos, decoded)
    parts = ([decoder.embed(prefix)] if prefix is not None else []) + [x, queries]
    out = decoder.pred(decoder.norm(decoder.blocks(torch.cat(parts, dim=1))))
    return out[:, -decoded.shape[1]:]


@METHODS.register("videomae")
class VideoMAE(MAE):
    Options = VideoMAEOptions
    test_options = {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}

    def __init__(self, backbone: nn.Module, options: VideoMAEOptions):
        if len(getattr(backbone, "grid_size", ())) == 2:  # single frames: a tube one step deep, MAE's random mask
            options = options.model_copy(update={"mask": "random"})
        super().__init__(backbone, options)
        masks, crop = self.views.masks, self.views.crops[0]
        if len(backbone.grid_size) == 3:  # clips: MAE's crop with the temporal stride
            crop = ClipSpec(**{f.name: getattr(crop, f.name) for f in dataclasses.fields(crop)},
                            stride=options.clip_stride)
        if options.decoder_mask_ratio > 0:
            masks = MaskSpec(DualTubeMask(options.mask_ratio, options.decoder_mask_ratio),
                             patch_size=masks.patch_size, views=masks.views, dims=3)
        self.views = type(self.views)(crops=(crop,), masks=masks)

    def forward(self, batch: dict) -> StepOutput:
        if self.options.decoder_mask_ratio == 0:
            return super().forward(batch)
        clips, masks = batch["views"][0], batch["masks"]
        tokens, prefix, grid = encode_visible(self.backbone, clips, masks["visible"])
        pred = decode_subset(self.decoder, tokens["patches"], masks["visible"], masks["decoded"], grid, prefix)
        target = torch.gather(patchify_nd(clips, self.patch_size), 1,
                              masks["decoded"][..., None].expand(-1, -1, pred.shape[-1]))
        loss = masked_patch_mse(pred, target, torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device),
                                normalize_target=self.options.normalize_target)
        with torch.no_grad():
            embeddings = self.backbone.pool(tokens)
        return StepOutput(loss=loss, embeddings=embeddings)
