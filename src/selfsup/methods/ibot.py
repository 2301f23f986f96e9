"""iBOT: Zhou, Wei, Wang, Shen, Xie, Yuille, Kong, "iBOT: Image BERT Pre-Training with Online Tokenizer",
ICLR 2022 (arXiv:2111.07832).

DINO on the class token plus masked image modelling whose "tokenizer" is the EMA teacher itself:

1. Views: 2 global crops (image size) and N local crops, as DINO; the loader also draws a block-wise patch mask
   (BEiT-style, :class:`~selfsup.views.masks.BlockMask`) for each global crop.
2. Student: the global crops with their masked patches replaced by a learnable mask token at the input
   (``forward_tokens(mask=..., mask_token=...)``), and the local crops unmasked.
3. Teacher (EMA of the student, cosine momentum 0.996 -> 1): the global crops unmasked.
4. Class-token loss: DINO's cross-view cross-entropy (:func:`~selfsup.losses.dino_loss`) between the teacher's
   global class tokens and every other student view, with its own centre.
5. Patch loss (:func:`~selfsup.losses.distillation.masked_patch_distillation`): at each MASKED patch of a
   global crop the student predicts the teacher's distribution for the same patch of the same crop; centred by
   a separate patch centre (the global mean over every teacher patch token) and sharpened by a patch
   temperature that warms up from 0.04 to 0.07.
6. Loss = lambda1 * class loss + lambda2 * patch loss (1 and 1 in the paper).

The head (:class:`~selfsup.heads.DINOHead`) is shared by class and patch tokens by default, which the paper
found better; ``shared_head: false`` gives the patch tokens their own head and ``patch_out_dim`` prototypes.

Deviation: every global crop is masked with the same ratio (``mask_ratio``, default 0.3), because the loader
gives a fixed number of masked patches per sample so batches stay rectangular. iBOT draws each image's ratio
uniformly from [0.1, 0.5] for ViT-S (0.3 +- 0.2), and leaves some images unmasked.
Needs a ViT backbone (``forward_tokens``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.methods.parts.ema import ema_update, frozen_copy
from selfsup.schedules import cosine_momentum, warmup_fraction
from selfsup.heads import DINOHead
from selfsup.losses.distillation import dino_loss, dino_targets, masked_patch_distillation_at_masks, update_center
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import Count, MultiCropOptions, encode_by_resolution
from selfsup.views import BlockMask, MaskSpec
from selfsup.views.mask_shapes import patch_mask_strategy


class IBOTOptions(MultiCropOptions):
    out_dim: int = Field(8192, ge=2)  # K prototypes of the (shared) head
    patch_out_dim: int = Field(8192, ge=2)  # only with shared_head: false
    shared_head: bool = True
    hidden_dim: int = Field(2048, ge=1)
    bottleneck_dim: int = Field(256, ge=1)
    student_temperature: float = Field(0.1, gt=0)
    teacher_temperature: float = Field(0.04, gt=0)  # class token, final value
    warmup_teacher_temperature: float = Field(0.04, gt=0)
    teacher_patch_temperature: float = Field(0.07, gt=0)  # patch tokens, final value
    warmup_teacher_patch_temperature: float = Field(0.04, gt=0)
    teacher_temperature_warmup: float = Field(0.3, ge=0, le=1)  # fraction of training (30 of 100 epochs)
    center_momentum: float = Field(0.9, ge=0, lt=1)
    patch_center_momentum: float = Field(0.9, ge=0, lt=1)
    momentum: float = Field(0.996, ge=0, le=1)  # teacher EMA, cosine to 1
    freeze_last_layer: float = Field(0.01, ge=0, le=1)  # fraction of training (the first epoch of 100)
    lambda1: float = Field(1.0, ge=0)  # class-token loss weight
    lambda2: float = Field(1.0, ge=0)  # masked patch loss weight
    mask_ratio: float = Field(0.3, ge=0, lt=1)
    mask_min_block: int = Field(4, ge=1)  # patches; iBOT uses 16 on a 14 x 14 grid, 4 suits 8 x 8
    # The paper's block-wise masks, or any registered patch-mask strategy (selfsup.views.masks) at mask_ratio with
    # its own options (mask_min_block is block's).
    mask: str = "block"
    mask_options: dict[str, Any] = Field(default_factory=dict)
    num_local_crops: Count = 10


@METHODS.register("ibot")
class IBOT(Method):
    Options = IBOTOptions
    needs_vit = True
    test_options = {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16, "num_local_crops": 2, "local_size": 8,
                    "freeze_last_layer": 0.5}

    def __init__(self, backbone: nn.Module, options: IBOTOptions):
        super().__init__()
        o = self.options = options
        self.backbone = backbone
        self.mask_token = nn.Parameter(torch.zeros(backbone.embed_dim))  # zero-initialised, as in iBOT
        self.head = DINOHead(backbone.num_features, o.out_dim, o.hidden_dim, o.bottleneck_dim)
        self.patch_head = None if o.shared_head else DINOHead(backbone.embed_dim, o.patch_out_dim, o.hidden_dim,
                                                              o.bottleneck_dim)
        self.teacher_backbone = frozen_copy(backbone)
        self.teacher_head = frozen_copy(self.head)
        self.teacher_patch_head = None if o.shared_head else frozen_copy(self.patch_head)
        self.register_buffer("center", torch.zeros(1, o.out_dim))
        self.register_buffer("patch_center", torch.zeros(1, o.out_dim if o.shared_head else o.patch_out_dim))
        self.momentum = o.momentum
        self.teacher_temperature = o.warmup_teacher_temperature
        self.teacher_patch_temperature = o.warmup_teacher_patch_temperature
        views = o.multi_crop_views()
        mask = (BlockMask(ratio=o.mask_ratio, min_block=o.mask_min_block, **o.mask_options) if o.mask == "block" else
                patch_mask_strategy(o.mask, o.mask_ratio, backbone.grid_size, "iBOT", **o.mask_options))
        self.views = dataclasses.replace(views, masks=MaskSpec(mask, patch_size=backbone.patch_size, views=(0, 1)))

    def on_step(self, progress: float) -> None:
        o = self.options
        self.momentum = cosine_momentum(progress, o.momentum)
        warm = warmup_fraction(progress, o.teacher_temperature_warmup)
        self.teacher_temperature = o.warmup_teacher_temperature + warm * (o.teacher_temperature - o.warmup_teacher_temperature)
        self.teacher_patch_temperature = o.warmup_teacher_patch_temperature + warm * (
            o.teacher_patch_temperature - o.warmup_teacher_patch_temperature)

    def before_optimizer_step(self, progress: float) -> None:
        if progress < self.options.freeze_last_layer:  # as DINO: keep the prototypes still at first
            for head in (self.head, self.patch_head):
                if head is not None:
                    head.last_layer.grad = None

    def after_optimizer_step(self, progress: float) -> None:
        ema_update(self.teacher_backbone, self.backbone, self.momentum)
        ema_update(self.teacher_head, self.head, self.momentum)
        if self.patch_head is not None:
            ema_update(self.teacher_patch_head, self.patch_head, self.momentum)

    def forward(self, batch: dict) -> StepOutput:
        o, views = self.options, batch["views"]
        masks = batch["masks"]["mask"]  # (B, 2, N): one mask per global crop
        globals_, global_masks = torch.cat(views[:2]), torch.cat([masks[:, 0], masks[:, 1]])
        patch_head = self.head if self.patch_head is None else self.patch_head
        tokens = self.backbone.forward_tokens(globals_, mask=global_masks, mask_token=self.mask_token)
        student_cls = list(self.head(self.backbone.pool(tokens)).chunk(2))
        # The student's patch head runs on the masked patches only: the patch loss (iBOT eq. 2) reads no other
        # (at mask_ratio 0.3, 70% of the head's patch rows, forward and backward, were computed and thrown away).
        student_masked = patch_head(tokens["patches"][global_masks])  # (M, K), image by image, patch by patch
        student_local = encode_by_resolution(lambda x: self.head(self.backbone(x)), views[2:]) if len(views) > 2 else []
        with torch.no_grad():
            teacher_tokens = self.teacher_backbone.forward_tokens(globals_)
            teacher_cls = list(self.teacher_head(self.teacher_backbone.pool(teacher_tokens)).chunk(2))
            teacher_patch_head = self.teacher_head if self.teacher_patch_head is None else self.teacher_patch_head
            teacher_patch_logits = teacher_patch_head(teacher_tokens["patches"])  # every patch: the centre's mean
            teacher_patches = list(teacher_patch_logits.chunk(2))

        cls_loss = dino_loss(student_cls + list(student_local), teacher_cls, self.center,
                             student_temp=o.student_temperature, teacher_temp=self.teacher_temperature)
        patch_loss = masked_patch_distillation_at_masks(student_masked, teacher_patch_logits, global_masks,
                                                        self.patch_center, student_temp=o.student_temperature,
                                                        teacher_temp=self.teacher_patch_temperature)
        targets = torch.cat(dino_targets(teacher_cls, self.center, self.teacher_temperature))  # before the update
        if self.training:
            self.center.copy_(update_center(self.center, teacher_cls, o.center_momentum))
            self.patch_center.copy_(update_center(self.patch_center, teacher_patches, o.patch_center_momentum))
        return StepOutput(loss=o.lambda1 * cls_loss + o.lambda2 * patch_loss,
                          metrics={"cls_loss": float(cls_loss.detach()), "patch_loss": float(patch_loss.detach()),
                                   "teacher_temperature": self.teacher_temperature},
                          embeddings=student_cls[0].detach(), targets=targets)
