"""Views of volumes (the field kind ``volume``, ``(C, D, H, W)``): everything in stage 1, per sample.

The 2-D executor (:mod:`selfsup.views.augment`) splits a view into per-sample geometry and batched photometry
on (B, C, H, W); its photometric operations are written for pictures and bands of a plane. A volume's view is
made whole here instead, from the sample's own generator (seed, epoch, index), so it keeps the house's
reproducibility (docs/ARCHITECTURE.md) without a second parameter layout:

1. a random resized 3-D crop: a box holding ``scale`` of the volume (uniform), its three sides stretched by
   log-uniform factors within ``ratio`` (normalised so that the box keeps its volume), trilinearly resized to
   ``size``^3 (the 3-D counterpart of RandomResizedCrop; the cube is what 3-D ViTs patch);
2. a flip along each of the three axes with probability ``flip_p`` each (scans have no canonical
   left / right, and ``data.hflip=false`` turns all three off for those that do);
3. with probability ``jitter_p``, an intensity jitter: contrast about the view's mean by up to
   ``band_contrast``, brightness by up to ``band_brightness`` (scanner gain and offset differ between sites);
   with probability ``noise_p``, Gaussian noise of ``noise_std`` (acquisition noise). No colour operation:
   voxels are measurements (channel kind ``bands``).

The view is returned with an empty parameter row: nothing is left for the collate step but normalisation
(:class:`selfsup.views.dataset.ViewCollate` skips its 2-D photometric stage for 5-D batches). Volumes are made
in the DataLoader workers only (``data.augment=device`` falls back to them, :mod:`selfsup.engine.loader`).
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from selfsup.views.spec import CropSpec


def crop_box_3d(shape: tuple[int, int, int], scale: tuple[float, float], ratio: tuple[float, float],
                gen: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """((front, top, left), (d, h, w)) of a random box covering about ``scale`` of a (D, H, W) volume."""
    fraction = gen.uniform(*scale)
    logs = [gen.uniform(math.log(ratio[0]), math.log(ratio[1])) for _ in range(3)]
    mean_log = sum(logs) / 3  # the stretches' product is 1: the box keeps the drawn volume
    side = fraction ** (1 / 3)
    sides = tuple(min(n, max(1, int(round(n * side * math.exp(lg - mean_log))))) for n, lg in zip(shape, logs))
    starts = tuple(gen.randint(0, n - s) for n, s in zip(shape, sides))
    return starts, sides


def make_volume_view(volume: torch.Tensor, spec: CropSpec, size: int, gen: random.Random,
                     kind: str = "bands") -> tuple[torch.Tensor, torch.Tensor]:
    """One view of a (C, D, H, W) volume (uint8, or float in [0, 1]): float (C, size, size, size) in [0, 1]
    and an empty parameter row. Draws, in this order: crop box, three flips, jitter, noise."""
    if volume.ndim != 4:
        raise ValueError(f"a volume view needs a (C, D, H, W) volume, got shape {tuple(volume.shape)}")
    (z, y, x), (d, h, w) = crop_box_3d(tuple(volume.shape[1:]), spec.scale, spec.ratio, gen)
    crop = volume[None, :, z:z + d, y:y + h, x:x + w].float()
    if volume.dtype == torch.uint8:
        crop = crop / 255
    view = F.interpolate(crop, size=(size, size, size), mode="trilinear", align_corners=False)[0]
    flips = [axis for axis in (1, 2, 3) if gen.random() < spec.flip_p]
    if flips:
        view = view.flip(flips)
    if gen.random() < spec.jitter_p:
        contrast = gen.uniform(1 - spec.band_contrast, 1 + spec.band_contrast)
        brightness = gen.uniform(1 - spec.band_brightness, 1 + spec.band_brightness)
        mean = view.mean(dim=(1, 2, 3), keepdim=True)
        view = (view - mean) * contrast + mean * brightness
    if gen.random() < spec.noise_p:
        noise_gen = torch.Generator().manual_seed(gen.getrandbits(63))
        view = view + spec.noise_std * torch.randn(view.shape, generator=noise_gen)
    return view.clamp_(0, 1), torch.zeros(0)


__all__ = ["crop_box_3d", "make_volume_view"]
