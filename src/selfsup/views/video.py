"""Views of videos (the field kind ``video``, ``(C, T, H, W)``): clips, made whole in stage 1 per sample.

A view is a clip of ``size`` frames of ``size`` x ``size`` pixels, ``(C, size, size, size)``, so the 3-D patch
grid of the volume machinery (:mod:`selfsup.backbones.vit3d`: tubelets of p frames x p x p pixels, patches
time-major; the ``tube`` mask, :mod:`selfsup.views.masks`) serves clips unchanged. From the sample's generator
(seed, epoch, index), in this order:

1. temporal sampling: ``size`` frames ``stride`` apart (:class:`ClipSpec`; 1 for a plain :class:`CropSpec`) from a
   uniformly random start, so that several clips of a video start at different times (a video shorter than the
   clip repeats its last frame);
2. one random resized crop box (``scale``, ``ratio``) and one horizontal flip (``flip_p``) for every frame;
3. with probability ``jitter_p``, one brightness and contrast change (``brightness``, ``contrast``), and with
   ``grayscale_p`` grayscale (3 channels), for every frame.

Steps 2 and 3 are CVRL's temporally consistent augmentation (Qian et al., "Spatiotemporal Contrastive Video
Representation Learning", CVPR 2021, section 3.2): the same spatial and colour change through a clip, so that
motion is not confused with augmentation; two clips of one video get independent draws. The view comes with an
empty parameter row: the collate step only normalises 5-D batches.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup.views.spec import CropSpec


@dataclass(frozen=True)
class ClipSpec(CropSpec):
    """A crop group of clips: :class:`CropSpec` plus the temporal ``stride`` between a clip's frames (2 plays
    the video at twice the speed: relative-speed methods ask for both)."""

    stride: int = 1


def clip_indices(num_frames: int, frames: int, stride: int, gen: random.Random) -> list[int]:
    """``frames`` frame indices ``stride`` apart from a random start (clamped to the last frame)."""
    span = (frames - 1) * stride + 1
    start = gen.randint(0, max(0, num_frames - span))
    return [min(start + i * stride, num_frames - 1) for i in range(frames)]


def crop_box_2d(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                gen: random.Random) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random box of about ``scale`` of the frame's area and aspect in ``ratio``."""
    area = gen.uniform(*scale) * height * width
    aspect = math.exp(gen.uniform(math.log(ratio[0]), math.log(ratio[1])))
    h = min(height, max(1, int(round(math.sqrt(area / aspect)))))
    w = min(width, max(1, int(round(math.sqrt(area * aspect)))))
    return gen.randint(0, height - h), gen.randint(0, width - w), h, w


def make_video_view(video: torch.Tensor, spec: CropSpec, size: int, gen: random.Random,
                    kind: str = "rgb") -> tuple[torch.Tensor, torch.Tensor]:
    """One clip of a (C, T, H, W) video (uint8, or float in [0, 1]): float (C, size, size, size) in [0, 1] and an
    empty parameter row. Draws, in this order: start frame, crop box, flip, jitter, grayscale."""
    if video.ndim != 4:
        raise ValueError(f"a video view needs a (C, T, H, W) video, got shape {tuple(video.shape)}")
    frames = clip_indices(video.shape[1], size, int(getattr(spec, "stride", 1)), gen)
    top, left, h, w = crop_box_2d(video.shape[2], video.shape[3], spec.scale, spec.ratio, gen)
    clip = video[:, frames, top:top + h, left:left + w].float()
    if video.dtype == torch.uint8:
        clip = clip / 255
    clip = F.interpolate(clip.transpose(0, 1), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True).transpose(0, 1)
    if gen.random() < spec.flip_p:
        clip = clip.flip(-1)
    if gen.random() < spec.jitter_p:
        brightness = gen.uniform(1 - spec.brightness, 1 + spec.brightness)
        contrast = gen.uniform(1 - spec.contrast, 1 + spec.contrast)
        mean = clip.mean()
        clip = ((clip - mean) * contrast + mean) * brightness
    if clip.shape[0] == 3 and gen.random() < spec.grayscale_p:
        luma = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1, 1)
        clip = (clip * luma).sum(0, keepdim=True).expand(3, -1, -1, -1)
    return clip.clamp(0, 1).contiguous(), torch.zeros(0)


__all__ = ["ClipSpec", "clip_indices", "crop_box_2d", "make_video_view"]
