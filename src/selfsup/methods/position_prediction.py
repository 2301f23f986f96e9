"""Position prediction: Zhai, Jaitly, Ramapuram, Busbridge, Likhomanenko, Cheng, Gu, Susskind, Goh, Lin, Shi,
"Position Prediction as an Effective Pretraining Strategy" (MP3), ICML 2022 (arXiv:2207.07611).

A ViT is shown its patches with the position embeddings taken away from a random subset of them
(``unpositioned_ratio``, drawn per sample by the data workers as a random patch mask) and predicts, for every
patch of that subset, which of the N grid positions it came from: a linear head on its output token gives N
logits, trained with cross entropy against the patch's true index. The patches that keep their positions are the
context the others are placed against; recognising where a patch goes needs its content and its relation to the
rest of the image. (MP3 removes the positions of every patch it predicts and also drops a fraction of the
patches for context; here the subset that loses its positions is the prediction target and the rest keep theirs,
which is MP3's "masked position" setting with a context of positioned patches.)

The augmentation is MAE's: a random resized crop and a flip. A per-sample mean loss: DDP averaging makes it
global.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.methods.mae import plain_crop
from selfsup.views import MaskSpec, RandomMask, ViewSpec


class PositionPredictionOptions(MethodOptions):
    unpositioned_ratio: float = Field(0.75, gt=0, lt=1)  # patches whose position is removed and predicted
    crop_scale: tuple[float, float] = (0.2, 1.0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)  # neighbouring positions look alike at a coarse grid


@METHODS.register("position_prediction")
class PositionPrediction(Method):
    Options = PositionPredictionOptions
    needs_vit = True

    def __init__(self, backbone: nn.Module, options: PositionPredictionOptions):
        super().__init__()
        if backbone.patch_pos_embed(backbone.grid_size) is None:
            raise ValueError("position prediction removes position embeddings from patches; this ViT has none")
        if len(backbone.grid_size) != 2:
            raise ValueError("position prediction works on images (a 2-D patch grid)")
        self.options = options
        self.backbone = backbone
        self.num_positions = backbone.grid_size[0] * backbone.grid_size[1]
        self.head = nn.Linear(backbone.embed_dim, self.num_positions)
        self.views = ViewSpec(crops=(plain_crop(options.crop_scale),),
                              masks=MaskSpec(RandomMask(options.unpositioned_ratio), patch_size=backbone.patch_size))

    def forward(self, batch: dict) -> StepOutput:
        images, unpositioned = batch["views"][0], batch["masks"]["mask"]
        grid = self.backbone.grid_for(*images.shape[-2:])
        if grid[0] * grid[1] != self.num_positions:
            raise ValueError(f"position prediction classifies among the {self.num_positions} positions of the "
                             f"backbone's grid; these {images.shape[-1]} px views have {grid[0] * grid[1]}")
        tokens = self.backbone.embed_patches(images)
        positions = self.backbone.patch_pos_embed(grid).to(tokens.dtype)
        tokens = tokens - positions * unpositioned.unsqueeze(-1).to(tokens.dtype)  # those patches: content only
        out = self.backbone.forward_blocks(tokens)
        logits = self.head(out["patches"][unpositioned])  # (M, N), image by image, patch by patch
        targets = unpositioned.nonzero()[:, 1]  # each patch's own index in the grid
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.options.label_smoothing)
        accuracy = (logits.argmax(1) == targets).float().mean()
        with torch.no_grad():
            embeddings = self.backbone.pool(out)
        return StepOutput(loss=loss, metrics={"position_accuracy": float(accuracy)}, embeddings=embeddings)
