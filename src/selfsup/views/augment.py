"""Per-sample view augmentation, executed in DataLoader workers.

Every random choice comes from a ``torch.Generator`` seeded by (run seed, epoch, sample index), never from
worker or process state: the number of workers or ranks and a resume in the middle of an epoch do not
change what the model sees (DESIGN.md, "Reproducibility").

The SimCLR augmentation (Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, appendix A): random resized crop, horizontal flip, colour jitter (p=0.8),
grayscale (p=0.2), Gaussian blur.
"""
from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as TF

from selfsup.views.spec import CropSpec


def sample_generator(seed: int, epoch: int, index: int, salt: int = 0) -> torch.Generator:
    # SplitMix-style mixing keeps neighbouring (epoch, index) pairs far apart in seed space.
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB + salt) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & (2**64 - 1)
    x ^= x >> 32
    return torch.Generator().manual_seed(x & (2**63 - 1))


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=gen).item()


def _chance(gen: torch.Generator, p: float) -> bool:
    return p > 0 and torch.rand((), generator=gen).item() < p


def crop_box(height: int, width: int, scale, ratio, gen: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering ``scale`` of the area with aspect in ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(gen, *scale)
        aspect = math.exp(_uniform(gen, *log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=gen))
            left = int(torch.randint(0, width - w + 1, (), generator=gen))
            return top, left, h, w
    # Fallback: central crop clamped to the allowed aspect ratios.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def colour_jitter(img: torch.Tensor, spec: CropSpec, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation, hue in random order (float image in [0, 1])."""
    rgb = img.shape[0] == 3
    ops = []
    if spec.brightness > 0:
        f = _uniform(gen, max(0.0, 1 - spec.brightness), 1 + spec.brightness)
        ops.append(lambda x, f=f: TF.adjust_brightness(x, f))
    if spec.contrast > 0:
        f = _uniform(gen, max(0.0, 1 - spec.contrast), 1 + spec.contrast)
        ops.append(lambda x, f=f: TF.adjust_contrast(x, f) if rgb else _contrast_any(x, f))
    if spec.saturation > 0 and rgb:
        f = _uniform(gen, max(0.0, 1 - spec.saturation), 1 + spec.saturation)
        ops.append(lambda x, f=f: TF.adjust_saturation(x, f))
    if spec.hue > 0 and rgb:
        f = _uniform(gen, -spec.hue, spec.hue)
        ops.append(lambda x, f=f: TF.adjust_hue(x, f))
    for i in torch.randperm(len(ops), generator=gen).tolist():
        img = ops[i](img)
    return img


def _contrast_any(img: torch.Tensor, factor: float) -> torch.Tensor:
    # Contrast for non-RGB images: blend towards the per-image mean of all channels.
    return (img.mean() + factor * (img - img.mean())).clamp(0, 1)


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    # Kernel of ~10% of the image side (SimCLR), odd, at least 3.
    k = max(3, int(0.1 * min(img.shape[-2:])) // 2 * 2 + 1)
    return TF.gaussian_blur(img, [k, k], [sigma, sigma])


def make_view(image: torch.Tensor, spec: CropSpec, size: int, gen: torch.Generator,
              mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """One augmented, normalised float view (C, size, size) of a uint8 (C, H, W) image."""
    top, left, h, w = crop_box(image.shape[-2], image.shape[-1], spec.scale, spec.ratio, gen)
    view = TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    view = view.float().div_(255)
    if _chance(gen, spec.flip_p):
        view = view.flip(-1)
    if _chance(gen, spec.jitter_p):
        view = colour_jitter(view, spec, gen)
    if view.shape[0] == 3 and _chance(gen, spec.grayscale_p):
        view = TF.rgb_to_grayscale(view, num_output_channels=3)
    if _chance(gen, spec.blur_p):
        view = gaussian_blur(view, _uniform(gen, *spec.blur_sigma))
    if _chance(gen, spec.solarize_p):
        view = torch.where(view >= 0.5, 1 - view, view)
    return view.sub_(mean).div_(std)
