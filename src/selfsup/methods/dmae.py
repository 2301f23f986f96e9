"""DMAE: Bai, Wang, Xiao, Wei, Wang, Yuille, Zhou, Xie, "Masked Autoencoders Enable Efficient Knowledge
Distillers", CVPR 2023 (arXiv:2208.12256).

MAE on the student ViT (:mod:`selfsup.methods.mae`: random masking, the encoder on the visible patches only, a
light decoder reconstructing the masked patches' normalised pixels) plus feature distillation: the student's
tokens of the visible patches, after block ``student_layer`` (default: its output), go through a projector (an
MLP from the student's width to the teacher's) and match a frozen teacher's features of the same patches,
after its block ``teacher_layer`` (default: its output). The loss is ``reconstruction + distill_weight *
distance``; the distance is smooth L1 against the teacher's tokens standardised per token by default
(``distance``, ``normalize_teacher``).

What makes it cheap (the paper's point): the teacher reads only the visible patches too, and runs only up to
``teacher_layer`` (its later blocks never run). That needs a ViT teacher on the student's patch grid (e.g. a
ViT at the same image size and patch size, or at twice both); ``teacher_sees: auto`` does so when it can.
Otherwise (``full``, or any teacher on another grid, a ConvNet teacher included) the teacher reads the whole
view and its feature map is resampled to the student's grid before the visible patches are taken: every
teacher can be distilled, at the full teacher's cost.

The exported backbone is the student's encoder; decoder and projector are thrown away.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.backbones.vit import gather_tokens
from selfsup.backbones.vit3d import patchify_nd
from selfsup.heads import MAEDecoder, mlp
from selfsup.losses import feature_distillation, masked_patch_mse
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.mae import MAEOptions, encode_visible, mae_reconstruction, plain_crop
from selfsup.methods.parts.teacher import TeacherChoice, block_output, build_teacher
from selfsup.views import MaskSpec, ViewSpec
from selfsup.views.masks import build_mask_strategy


class DMAEOptions(MAEOptions, TeacherChoice):
    distill_weight: float = Field(1.0, ge=0)
    student_layer: int | None = Field(None, ge=1)  # the student block whose visible tokens are distilled; None: output
    teacher_layer: int | None = Field(None, ge=1)  # the teacher block they match (a ViT teacher); None: its output
    teacher_sees: Literal["auto", "visible", "full"] = "auto"
    distance: Literal["smooth_l1", "l1", "mse", "cosine"] = "smooth_l1"
    normalize_teacher: bool = True  # standardise each teacher token (the teacher's residual stream has its own scale)
    projector_hidden_dim: int = Field(512, ge=1)
    projector_layers: int = Field(2, ge=1)


@METHODS.register("dmae")
class DMAE(Method):
    Options = DMAEOptions
    needs_vit = True
    test_options = {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, "projector_hidden_dim": 32,
                    "teacher": {"name": "vit_micro_cpu", "random_init": True,
                                "options": {"img_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2}}}

    def __init__(self, backbone: nn.Module, options: DMAEOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        self.patch_size = backbone.patch_size
        if len(backbone.grid_size) != 2:
            raise ValueError("DMAE distils images (a 2-D patch grid); for volumes use method: mae")
        self.teacher = build_teacher(options.teacher, backbone.spec.get("in_channels", 3))
        if options.teacher_layer is not None and not self.teacher.is_vit:
            raise ValueError("method_options.teacher_layer needs a ViT teacher; a ConvNet teacher gives its last "
                             "feature map (leave teacher_layer unset)")
        channels = backbone.spec.get("in_channels", 3)
        self.decoder = MAEDecoder(backbone.embed_dim, self.patch_size ** 2 * channels, backbone.grid_size,
                                  options.decoder_dim, options.decoder_depth, options.decoder_heads)
        self.projector = mlp(backbone.embed_dim, options.projector_hidden_dim, self.teacher.num_features,
                             options.projector_layers, batch_norm=False)
        if options.mask in ("cube", "tube"):
            raise ValueError(f"method_options.mask={options.mask} masks volumes; DMAE distils images: use mask: auto")
        mask = "random" if options.mask == "auto" else options.mask
        self.views = ViewSpec(crops=(plain_crop(options.crop_scale),),
                              masks=MaskSpec(build_mask_strategy(mask, ratio=options.mask_ratio),
                                             patch_size=self.patch_size, views=0))

    def predict(self, images: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Pixel predictions for every patch from the visible ones (as :meth:`MAE.predict`)."""
        tokens, prefix, grid = encode_visible(self.backbone, images, visible)
        return self.decoder(tokens["patches"], visible, grid, prefix), tokens

    def teacher_grid(self, images: torch.Tensor) -> tuple[int, int] | None:
        """The ViT teacher's patch grid on its input for these images; None for a ConvNet teacher."""
        if not self.teacher.is_vit:
            return None
        size = self.teacher.image_size or images.shape[-1]
        return self.teacher.model.grid_for(size, size)

    def teacher_targets(self, images: torch.Tensor, visible: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The teacher's features of the visible patches, (B, K, D), no gradient (the module docstring)."""
        o = self.options
        same_grid = self.teacher_grid(images) == tuple(grid)
        if o.teacher_sees == "visible" and not same_grid:
            raise ValueError(f"method_options.teacher_sees=visible needs a ViT teacher on the student's {grid} patch "
                             "grid; use teacher_sees: full (the teacher's map is then resampled to it)")
        if same_grid and o.teacher_sees != "full":
            return self.teacher.tokens(images, visible, o.teacher_layer)
        if self.teacher.is_vit:
            tokens = self.teacher.tokens(images, None, o.teacher_layer)
            fmap = tokens.transpose(1, 2).reshape(len(images), -1, *self.teacher_grid(images))
        else:
            fmap = self.teacher.feature_map(images)[1]
        if fmap.shape[-2] >= grid[0] and fmap.shape[-1] >= grid[1]:
            fmap = F.adaptive_avg_pool2d(fmap, grid)
        else:
            fmap = F.interpolate(fmap, size=grid, mode="bilinear", align_corners=False)
        return gather_tokens(fmap.flatten(2).transpose(1, 2), visible)

    def forward(self, batch: dict) -> StepOutput:
        o = self.options
        images, masks = batch["views"][0], batch["masks"]
        visible = masks["visible"]
        if o.student_layer is None:
            tokens, prefix, grid = encode_visible(self.backbone, images, visible)
            student = tokens["patches"]
        else:
            with block_output(self.backbone, o.student_layer) as captured:
                tokens, prefix, grid = encode_visible(self.backbone, images, visible)
            student = captured[0]
        pred = self.decoder(tokens["patches"], visible, grid, prefix)
        reconstruction = masked_patch_mse(pred, patchify_nd(images, self.patch_size), masks["mask"],
                                          normalize_target=o.normalize_target)
        distill = feature_distillation(self.projector(student), self.teacher_targets(images, visible, grid),
                                       o.distance, o.normalize_teacher)
        with torch.no_grad():
            embeddings = self.backbone.pool(tokens)
        return StepOutput(loss=reconstruction + o.distill_weight * distill, embeddings=embeddings,
                          metrics={"reconstruction": float(reconstruction.detach()),
                                   "distillation": float(distill.detach())})

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
        """Input, masked input and reconstruction rows, as :meth:`MAE.reconstruct`."""
        return mae_reconstruction(self, images, seed, self.options.normalize_target)
