"""Pieces several methods assemble: the standard view recipes, the option groups that configure them, the
multi-crop forward, and the check that a method's backbone gives token access."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Annotated

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.methods.base import MethodOptions
from selfsup.views import CropSpec, ViewSpec

Probability = Annotated[float, Field(ge=0, le=1)]
Strength = Annotated[float, Field(ge=0)]
Scale = tuple[float, float]  # area fractions of a random resized crop
LocalSize = Annotated[int, Field(ge=4)]  # pixels
Count = Annotated[int, Field(ge=0)]


def simclr_crops(count: int = 2, scale=(0.08, 1.0), colour_strength: float = 0.5, blur_p: float = 0.0,
                 grayscale_p: float = 0.2, solarize_p: float = 0.0, size: int | None = None) -> CropSpec:
    """The SimCLR augmentation (Chen et al., ICML 2020, appendix A), shared by most joint-embedding methods:
    random resized crop, flip, colour jitter with strength s (0.8s brightness/contrast/saturation, 0.2s hue,
    p=0.8), grayscale, optional blur and solarize."""
    s = colour_strength
    return CropSpec(count=count, size=size, scale=tuple(scale), brightness=0.8 * s, contrast=0.8 * s,
                    saturation=0.8 * s, hue=0.2 * s, blur_p=blur_p, grayscale_p=grayscale_p, solarize_p=solarize_p)


def asymmetric_views(scale, colour_strength: float, blur_p, solarize_p) -> ViewSpec:
    """Two views with their own blur and solarize probabilities (BYOL, Grill et al., NeurIPS 2020, table 6:
    view 1 always blurred, view 2 rarely blurred and sometimes solarized), the SimCLR recipe otherwise."""
    return ViewSpec(crops=tuple(simclr_crops(1, scale, colour_strength, blur, solarize_p=solarize)
                                for blur, solarize in zip(blur_p, solarize_p)))


def multi_crop(global_crop: CropSpec, num_local: int, local_size: int, local_scale=(0.05, 0.4)) -> ViewSpec:
    """Multi-crop (SwAV, Caron et al., NeurIPS 2020, section 3.2): the global crops first, then ``num_local``
    small crops at ``local_size`` pixels with the global crops' photometric recipe."""
    crops = [global_crop]
    if num_local:
        crops.append(dataclasses.replace(global_crop, count=num_local, size=local_size, scale=tuple(local_scale)))
    return ViewSpec(crops=tuple(crops))


class SameViewsOptions(MethodOptions):
    """Views that all follow one SimCLR recipe (:func:`simclr_crops`); methods override the defaults."""

    crop_scale: Scale = (0.08, 1.0)
    colour_strength: Strength = 0.5  # s: jitter 0.8s brightness/contrast/saturation, 0.2s hue
    blur_p: Probability = 0.5
    grayscale_p: Probability = 0.2
    solarize_p: Probability = 0.0

    def same_views(self, count: int = 2) -> ViewSpec:
        return ViewSpec(crops=(simclr_crops(count, self.crop_scale, self.colour_strength, self.blur_p,
                                            self.grayscale_p, self.solarize_p),))


class AsymmetricViewsOptions(MethodOptions):
    """Two views with their own blur and solarize probabilities (:func:`asymmetric_views`)."""

    crop_scale: Scale = (0.08, 1.0)
    colour_strength: Strength = 0.5
    blur_p: tuple[Probability, Probability] = (1.0, 0.1)  # per view
    solarize_p: tuple[Probability, Probability] = (0.0, 0.2)  # per view

    def asymmetric_views(self) -> ViewSpec:
        return asymmetric_views(self.crop_scale, self.colour_strength, self.blur_p, self.solarize_p)


class MultiCropOptions(MethodOptions):
    """Two global crops of the SimCLR recipe and ``num_local_crops`` small ones (:func:`multi_crop`); the
    defaults are DINO's (Caron et al., ICCV 2021) at 32 px."""

    num_local_crops: Count = 6
    local_size: LocalSize = 16  # pixels (96 next to 224-px global crops at ImageNet scale)
    global_scale: Scale = (0.4, 1.0)
    local_scale: Scale = (0.05, 0.4)
    colour_strength: Strength = 0.5
    blur_p: Probability = 0.5
    solarize_p: Probability = 0.1

    def multi_crop_views(self) -> ViewSpec:
        crop = simclr_crops(2, self.global_scale, self.colour_strength, self.blur_p, solarize_p=self.solarize_p)
        return multi_crop(crop, self.num_local_crops, self.local_size, self.local_scale)


def has_token_access(backbone: nn.Module) -> bool:
    """Whether ``backbone`` gives token-level access (``forward_tokens``: ViTs), as masked and predictive
    methods (``Method.needs_vit``) require."""
    return hasattr(backbone, "forward_tokens")


def encode_by_resolution(encode: Callable[[torch.Tensor], torch.Tensor],
                         views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``[encode(v) for v in views]`` with one call per run of consecutive views of the same resolution.

    Batching the views of one resolution keeps BatchNorm statistics over all of them (as the papers do)
    and costs one backbone call instead of one per view."""
    outputs: list[torch.Tensor] = []
    start = 0
    while start < len(views):
        end = start
        while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
            end += 1
        group = views[start:end]
        outputs.extend(encode(torch.cat(group)).split([v.shape[0] for v in group]))
        start = end
    return outputs
