"""SimCLRv2's distillation via unlabelled examples: Chen, Kornblith, Swersky, Norouzi, Hinton, "Big
Self-Supervised Models are Strong Semi-Supervised Learners", NeurIPS 2020 (arXiv:2006.10029), section 2.

After pre-training and fine-tuning on the few labels, the fine-tuned network is a teacher whose class
predictions on the *unlabelled* images train a student: ``-sum_y P_T(y | x; T) log P_S(y | x; T)`` with both
distributions softened by the temperature T (eq. 2; Hinton et al. 2015), the teacher fixed. No label is read.
The student is the run's backbone plus a linear classifier (``head_layers: 2`` puts an MLP there instead); its
backbone is what gets exported and evaluated.

The teacher (:mod:`selfsup.methods.parts.teacher`) is a backbone with a linear head: ``head.weight`` (K, D) and
``head.bias`` (K,) in its weights file, or in a file of their own given as ``method_options.teacher.head``
(written by :func:`~selfsup.methods.parts.teacher.save_head` from a classifier trained on the teacher's
features: a fine-tuned model's head with its fine-tuned backbone saved by ``save_backbone``, or a linear probe
on a frozen one). It reads the student's view (``teacher_view: same``, the paper's setting) or the clean view
of the whole image, whose features are then cached by sample index (``teacher_view: clean``).

The teacher's softened predictions are reported as ``StepOutput.targets``, so the collapse monitor warns
when they are uniform (a teacher that says nothing, or a temperature too high for its logits).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.heads import mlp
from selfsup.losses import soft_target_distillation
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import Scale
from selfsup.methods.mae import plain_crop
from selfsup.methods.parts.teacher import TeacherMethodOptions, build_teacher
from selfsup.methods.parts.teacher_cache import FeatureCache, clean_crop, is_deterministic
from selfsup.views import ViewSpec


class SimCLRv2DistillOptions(TeacherMethodOptions):
    temperature: float = Field(1.0, gt=0)  # T of both softmaxes
    head_layers: int = Field(1, ge=1)  # the student's classifier on its features: 1 = linear
    head_hidden_dim: int = Field(512, ge=1)
    # The student's view: a random resized crop and a flip, no colour change (fine-tuning's augmentation).
    crop_scale: Scale = (0.2, 1.0)


@METHODS.register("simclrv2_distill")
class SimCLRv2Distill(Method):
    Options = SimCLRv2DistillOptions
    # temperature 0.1: a random-init teacher's logits are small; at T=1 its targets would be near uniform
    test_options = {"temperature": 0.1, "teacher": {"name": "small_resnet", "options": {"widths": [8, 8, 16, 16]},
                                                    "random_init": True, "classes": 4}}

    def __init__(self, backbone: nn.Module, options: SimCLRv2DistillOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        self.teacher = build_teacher(options.teacher, backbone.spec.get("in_channels", 3), classifier=True)
        self.head = mlp(backbone.num_features, options.head_hidden_dim, self.teacher.num_classes, options.head_layers)
        self.cache = FeatureCache()
        crops = (plain_crop(options.crop_scale),)
        if options.teacher_view == "clean":
            crops = (*crops, clean_crop(self.teacher.image_size))
        self.views = ViewSpec(crops=crops)

    def teacher_logits(self, batch: dict) -> torch.Tensor:
        view = batch["views"][-1]  # the clean view, or the student's own
        if self.options.teacher_view == "clean" and self.options.teacher_cache and "index" in batch \
                and is_deterministic(self.views.crops[-1]):
            return self.teacher.logits(features=self.cache(batch["index"], view, self.teacher.features))
        return self.teacher.logits(view)

    def forward(self, batch: dict) -> StepOutput:
        teacher = self.teacher_logits(batch)
        features = self.backbone(batch["views"][0])
        student = self.head(features)
        loss = soft_target_distillation(student, teacher, self.options.temperature)
        with torch.no_grad():
            targets = torch.softmax(teacher / self.options.temperature, dim=-1)
            agreement = float((student.argmax(dim=1) == teacher.argmax(dim=1)).float().mean())
        return StepOutput(loss=loss, metrics={"teacher_agreement": agreement}, embeddings=features.detach(),
                          targets=targets)
