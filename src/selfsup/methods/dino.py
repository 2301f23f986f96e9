"""DINO: Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin, "Emerging Properties in Self-Supervised
Vision Transformers", ICCV 2021 (arXiv:2104.14294).

Self-distillation with no labels: a student (backbone + DINO head) sees all crops (2 global + N local); a
teacher, the student's exponential moving average, sees the global crops only. The student matches the
teacher's sharpened (low temperature), centred output distribution over K prototypes by cross-entropy
across different views. Centring (a running mean of teacher outputs) and sharpening together avoid
collapse; the teacher temperature warms up; the head's last layer is frozen during the first epoch.

The centre is updated from the global batch mean (all-reduced in ``update_center``), so it is the same on
every rank; the cross-entropy is a per-sample mean that DDP averaging makes global.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.methods.parts.ema import ema_update, frozen_copy
from selfsup.schedules import cosine_momentum, warmup_fraction
from selfsup.heads import DINOHead
from selfsup.losses.distillation import dino_loss, dino_targets, update_center
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import MultiCropOptions, encode_by_resolution, has_token_access


class DINOOptions(MultiCropOptions):
    out_dim: int = Field(65536, ge=2)  # K prototypes
    hidden_dim: int = Field(2048, ge=1)
    bottleneck_dim: int = Field(256, ge=1)
    # BatchNorm in the head's MLP. None: as the paper, BN for ConvNets and none for ViTs. Without it the small
    # ResNet's head goes to uniform targets (loss ln K) within a few dozen steps, even on one repeated batch
    # (tests/test_method_contract.py), where with it the loss falls.
    head_batch_norm: bool | None = None
    student_temperature: float = Field(0.1, gt=0)
    teacher_temperature: float = Field(0.04, gt=0)  # final value
    warmup_teacher_temperature: float = Field(0.04, gt=0)  # initial value
    teacher_temperature_warmup: float = Field(0.1, ge=0, le=1)  # fraction of training (30 of 300 epochs)
    center_momentum: float = Field(0.9, ge=0, lt=1)
    momentum: float = Field(0.996, ge=0, le=1)  # teacher EMA, cosine to 1
    freeze_last_layer: float = Field(0.01, ge=0, le=1)  # fraction of training (the first epoch of 100)


@METHODS.register("dino")
class DINO(Method):
    Options = DINOOptions
    test_options = {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16, "num_local_crops": 2, "local_size": 8,
                    "freeze_last_layer": 0.5}

    def __init__(self, backbone: nn.Module, options: DINOOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        batch_norm = not has_token_access(backbone) if options.head_batch_norm is None else options.head_batch_norm
        self.head = DINOHead(backbone.num_features, options.out_dim, options.hidden_dim, options.bottleneck_dim,
                             batch_norm=batch_norm)
        self.teacher_backbone = frozen_copy(backbone)
        self.teacher_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(1, options.out_dim))
        self.sync_batchnorm = batch_norm
        self.momentum = options.momentum
        self.teacher_temperature = options.warmup_teacher_temperature
        self.views = options.multi_crop_views()

    def on_step(self, progress: float) -> None:
        o = self.options
        self.momentum = cosine_momentum(progress, o.momentum)
        warm = warmup_fraction(progress, o.teacher_temperature_warmup)
        self.teacher_temperature = o.warmup_teacher_temperature + warm * (o.teacher_temperature - o.warmup_teacher_temperature)

    def before_optimizer_step(self, progress: float) -> None:
        if progress < self.options.freeze_last_layer:
            self.head.last_layer.grad = None

    def after_optimizer_step(self, progress: float) -> None:
        ema_update(self.teacher_backbone, self.backbone, self.momentum)
        ema_update(self.teacher_head, self.head, self.momentum)

    def forward(self, batch: dict) -> StepOutput:
        views = batch["views"]
        student = encode_by_resolution(lambda x: self.head(self.backbone(x)), views)
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(torch.cat(views[:2]))).chunk(2)
        loss = dino_loss(student, list(teacher), self.center, student_temp=self.options.student_temperature,
                         teacher_temp=self.teacher_temperature)
        targets = torch.cat(dino_targets(list(teacher), self.center, self.teacher_temperature))  # before the update
        if self.training:
            self.center.copy_(update_center(self.center, list(teacher), self.options.center_momentum))
        return StepOutput(loss=loss, metrics={"teacher_temperature": self.teacher_temperature},
                          embeddings=student[0].detach(), targets=targets)
