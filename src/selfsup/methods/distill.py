"""Feature distillation from a frozen teacher: a small student (any backbone) learns to give the features of a
large pre-trained one (any backbone), so that it can replace it at a fraction of the cost.

The student's pooled features go through a projector (an MLP from the student's width to the teacher's) and
match the teacher's pooled features of the same image:

- ``loss: cosine`` (``1 - cos``) or ``smooth_l1`` (against the teacher's features standardised per vector):
  feature matching as in FitNets (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015) and Heo et
  al., "A Comprehensive Overhaul of Feature Distillation", ICCV 2019;
- ``loss: seed``: SEED (Fang et al., "SEED: Self-supervised Distillation for Visual Representation", ICLR 2021):
  the student matches the teacher's *similarity distribution* over a queue of teacher embeddings (softmax at
  temperature 0.01 for the teacher, 0.2 for the student, cross-entropy), which transfers how the teacher
  arranges the data rather than each coordinate, what gets small students close to the teacher in kNN.
  The batch's own teacher embeddings enter the queue before the loss, so each sample's positive is in it
  (the paper appends it); ``queue_size`` should exceed the global batch.

With ``patch_weight > 0`` (and ``teacher_view: same``) the student's spatial map (a ConvNet's last feature map,
a ViT's patch tokens) is resampled to the teacher's token grid and matched location by location through a 1x1
projector (``patch_distance``), as feature-map distillation does (Heo et al. 2019).

Which view the teacher reads (:mod:`selfsup.methods.parts.teacher`): ``teacher_view: same`` gives it the
student's augmented view (resized to the teacher's image size); ``teacher_view: clean`` adds one un-augmented
view per sample (the whole image resized, as evaluation sees it), so the student learns to map every crop of
an image to the teacher's features of the whole image, and those features never change: they are computed
once per sample and cached by sample index (``teacher_cache``). The exported backbone is the student's.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.heads import mlp
from selfsup.losses import feature_distillation, similarity_distillation
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import Probability, SameViewsOptions, Scale, has_token_access
from selfsup.methods.parts.queue import FeatureQueue
from selfsup.methods.parts.teacher import TeacherMethodOptions, build_teacher, spatial_features
from selfsup.methods.parts.teacher_cache import FeatureCache, clean_crop, is_deterministic
from selfsup.views import ViewSpec

Distance = Literal["cosine", "smooth_l1", "l1", "mse"]

#: a tiny random-init teacher, so that the parametrized method tests need no file
TEST_TEACHER = {"name": "small_resnet", "options": {"widths": [8, 8, 16, 16]}, "random_init": True}


class DistillOptions(SameViewsOptions, TeacherMethodOptions):
    loss: Literal["cosine", "smooth_l1", "seed"] = "cosine"
    normalize_teacher: bool = True  # smooth_l1 / l1 / mse: standardise each teacher vector first
    projector_hidden_dim: int = Field(1024, ge=1)
    projector_layers: int = Field(2, ge=1)  # 1: a linear map from the student's width to the teacher's
    num_views: int = Field(1, ge=1)  # augmented student views per image, each matched to the teacher
    # SEED (loss: seed): the queue of teacher embeddings and the two temperatures (the paper's values)
    queue_size: int = Field(4096, ge=1)
    student_temperature: float = Field(0.2, gt=0)
    teacher_temperature: float = Field(0.01, gt=0)
    patch_weight: float = Field(0.0, ge=0)  # feature-map distillation on the teacher's grid (teacher_view: same)
    patch_distance: Distance = "smooth_l1"
    patch_hidden_dim: int = Field(256, ge=1)
    # The student's views: the SimCLR recipe, milder crops and no blur (CIFAR-scale images).
    crop_scale: Scale = (0.2, 1.0)
    blur_p: Probability = 0.0


@METHODS.register("distill")
class Distill(Method):
    Options = DistillOptions
    test_options = {"teacher": TEST_TEACHER, "teacher_view": "clean", "projector_hidden_dim": 32, "queue_size": 64}

    def __init__(self, backbone: nn.Module, options: DistillOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        self.teacher = build_teacher(options.teacher, backbone.spec.get("in_channels", 3))
        dim = self.teacher.num_features
        self.projector = mlp(backbone.num_features, options.projector_hidden_dim, dim, options.projector_layers)
        if options.loss == "seed":
            self.queue = FeatureQueue(options.queue_size, dim)
        self.patch_projector = None
        if options.patch_weight > 0:
            if options.teacher_view != "same":
                raise ValueError("method_options.patch_weight needs teacher_view: same (a clean view of the whole "
                                 "image is not aligned with the student's crop, location by location)")
            if not (has_token_access(backbone) or hasattr(backbone, "forward_features")):
                raise ValueError(f"method_options.patch_weight: {backbone.spec.get('name')} gives no feature map")
            width = backbone.embed_dim if has_token_access(backbone) else backbone.num_features
            self.patch_projector = nn.Sequential(
                nn.Conv2d(width, options.patch_hidden_dim, 1, bias=False), nn.BatchNorm2d(options.patch_hidden_dim),
                nn.ReLU(inplace=True), nn.Conv2d(options.patch_hidden_dim, dim, 1))
        self.cache = FeatureCache()
        views = options.same_views(options.num_views)
        if options.teacher_view == "clean":
            views = ViewSpec(crops=(*views.crops, clean_crop(self.teacher.image_size)))
        self.views = views

    def cached(self, batch: dict) -> bool:
        """Whether this batch's teacher features may come from the cache: a clean view that is still
        deterministic (``data.overhead`` adds random turns to every view) and the batch's sample indices."""
        return (self.options.teacher_view == "clean" and self.options.teacher_cache and "index" in batch
                and is_deterministic(self.views.crops[-1]))

    def teacher_targets(self, batch: dict, student_views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(pooled teacher features (n * B, D), teacher map (n * B, D, h, w) or None), no gradient."""
        n = self.options.num_views
        if self.options.teacher_view == "clean":
            clean = batch["views"][-1]
            features = (self.cache(batch["index"], clean, self.teacher.features) if self.cached(batch)
                        else self.teacher.features(clean))
            return features.repeat(n, 1), None
        if self.patch_projector is not None:
            return self.teacher.feature_map(student_views)
        return self.teacher.features(student_views), None

    def patch_loss(self, student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
        """The student's map on the teacher's grid (average-pooled down, or bilinearly up), projected, matched
        at every location."""
        grid = teacher_map.shape[-2:]
        if student_map.shape[-2] >= grid[0] and student_map.shape[-1] >= grid[1]:
            student_map = F.adaptive_avg_pool2d(student_map, grid)
        else:
            student_map = F.interpolate(student_map, size=grid, mode="bilinear", align_corners=False)
        prediction = self.patch_projector(student_map).flatten(2).transpose(1, 2)  # (B, h * w, D)
        return feature_distillation(prediction, teacher_map.flatten(2).transpose(1, 2), self.options.patch_distance,
                                    self.options.normalize_teacher)

    def forward(self, batch: dict) -> StepOutput:
        o = self.options
        student_views = torch.cat(batch["views"][:o.num_views])
        targets, teacher_map = self.teacher_targets(batch, student_views)
        if self.patch_projector is not None:
            pooled, student_map = spatial_features(self.backbone, student_views)
        else:
            pooled, student_map = self.backbone(student_views), None
        projected = self.projector(pooled)
        if o.loss == "seed":
            # each distinct teacher embedding once: with a clean view the n student views share one
            self.queue.enqueue(targets[: len(targets) // o.num_views] if o.teacher_view == "clean" else targets)
            loss = similarity_distillation(projected, targets, self.queue.get(), o.student_temperature,
                                           o.teacher_temperature)
        else:
            loss = feature_distillation(projected, targets, o.loss, o.normalize_teacher)
        metrics = {"feature_loss": float(loss.detach())}
        if teacher_map is not None:
            patch = self.patch_loss(student_map, teacher_map)
            loss = loss + o.patch_weight * patch
            metrics["patch_loss"] = float(patch.detach())
        with torch.no_grad():
            metrics["teacher_cosine"] = float(F.cosine_similarity(projected.float(), targets, dim=1).mean())
        if self.cached(batch):
            metrics["teacher_cache_hits"] = self.cache.hits / max(1, self.cache.hits + self.cache.misses)
        return StepOutput(loss=loss, metrics=metrics, embeddings=projected[: len(batch["views"][0])].detach())
