"""Pieces several methods assemble: the standard view recipes and the multi-crop forward."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from selfsup.views import CropSpec, ViewSpec


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
