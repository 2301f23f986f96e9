"""View augmentation in two stages: per-sample geometry, then batched photometry.

Stage 1 (:func:`make_view`, per sample, in DataLoader workers): draw every random parameter of the view from
a generator seeded by (run seed, epoch, sample index), never from worker or process state, then crop, resize
and flip. The number of workers or ranks and a resume in the middle of an epoch do not change what the model
sees (docs/ARCHITECTURE.md, "Reproducibility").

The same stage 1 also runs batched on the training device (``data.augment=device``, :mod:`selfsup.views.device`)
from the same parameters: :func:`draw_view_params` is the one place that consumes a view's randomness.

Stage 2 (:func:`apply_photometric`, per batch, in the collate step of the workers or on the accelerator):
the photometric operations of :data:`VIEW_OPS` that the images' channel kind allows (``rgb``, ``gray``,
``bands``: :mod:`selfsup.data.pixels`), with each sample's own parameters, vectorized over the batch. Colour
jitter, grayscale and solarize assume a display-referred picture and never touch measurements; those get
per-band jitter, spectral tilt, band dropout and noise (:mod:`selfsup.views.bands`). Per-sample torch calls
on 32 px images cost ~10 us of dispatch each; batching them makes the colour stage almost free.

The SimCLR augmentation (Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, appendix A): random resized crop, horizontal flip, colour jitter (p=0.8) in
random order, grayscale (p=0.2), Gaussian blur.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from selfsup.data.pixels import CHANNEL_KINDS, default_channel_kind
from selfsup.registry import Registry
from selfsup.views.spec import CropSpec

# Photometric parameter vector of one view (stage 2), column by column.
P_JITTER, P_BRIGHT, P_CONTRAST, P_SAT, P_HUE = 0, 1, 2, 3, 4
P_ORDER = slice(5, 9)  # rank of brightness, contrast, saturation, hue in the random order
P_GRAY, P_BLUR, P_SIGMA, P_SOLARIZE = 9, 10, 11, 12
# Channel kind "bands" only (zero otherwise, and drawn only then, so other views keep their random streams):
# the seed of the per-band values, the strengths of band jitter, the spectral tilt, band dropout and noise.
P_BAND_SEED, P_BAND_BRIGHT, P_BAND_CONTRAST, P_TILT_ON, P_TILT = 13, 14, 15, 16, 17
P_DROPOUT, P_DROP_RATE, P_NOISE, P_NOISE_STD = 18, 19, 20, 21
NUM_PARAMS = 22
RGB, GRAY, BANDS = CHANNEL_KINDS
ALL_KINDS = frozenset(CHANNEL_KINDS)


@dataclass(frozen=True)
class ViewOp:
    """One view operation: the channel kinds it may touch, its stage (``geometry``: per sample in stage 1,
    every kind; ``photometry``: batched in stage 2), and for photometry ``apply(x, params) -> x`` on the
    selected images and the column of ``params`` that selects them (> 0.5)."""

    kinds: frozenset[str]
    stage: str
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    gate: int | None = None


#: Every view operation, registered where it is defined, with the channel kinds it is allowed on; stage 2
#: applies an operation only to images of those kinds (tests/test_views.py checks it for every entry).
VIEW_OPS: Registry[ViewOp] = Registry("view op", key="data.channel_kind")
for _name in ("random_resized_crop", "horizontal_flip", "vertical_flip", "rotate90"):
    VIEW_OPS.add(_name, ViewOp(ALL_KINDS, "geometry"))


def sample_generator(seed: int, epoch: int, index: int, salt: int = 0) -> random.Random:
    """A fast generator owned by one sample of one epoch (SplitMix-style mixing of the three integers)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB + salt) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & (2**64 - 1)
    x ^= x >> 32
    return random.Random(x)


def crop_box(height: int, width: int, scale, ratio, gen: random.Random) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering ``scale`` of the area with aspect in ``ratio``
    (the RandomResizedCrop rule: 10 tries, then a central crop clamped to the ratio range)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * gen.uniform(*scale)
        aspect = math.exp(gen.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return gen.randint(0, height - h), gen.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: torch.Tensor, top: int, left: int, h: int, w: int, size: int) -> torch.Tensor:
    """Crop and bilinearly resize a (C, H, W) image (uint8, or float in [0, 1]) to float (C, size, size) in [0, 1]."""
    crop = image[None, :, top:top + h, left:left + w].float()
    out = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=h > size or w > size)
    return (out[0].div_(255) if image.dtype == torch.uint8 else out[0]).clamp_(0, 1)


def photometric_params(spec: CropSpec, gen: random.Random, kind: str = RGB) -> torch.Tensor:
    return torch.tensor(photometric_values(spec, gen, kind))


def photometric_values(spec: CropSpec, gen: random.Random, kind: str = RGB) -> list[float]:
    """:func:`photometric_params` as a list (a tensor per view costs more than drawing the view's parameters)."""
    p = [0.0] * NUM_PARAMS
    p[P_JITTER] = float(gen.random() < spec.jitter_p)
    p[P_BRIGHT] = gen.uniform(max(0.0, 1 - spec.brightness), 1 + spec.brightness)
    p[P_CONTRAST] = gen.uniform(max(0.0, 1 - spec.contrast), 1 + spec.contrast)
    p[P_SAT] = gen.uniform(max(0.0, 1 - spec.saturation), 1 + spec.saturation)
    p[P_HUE] = gen.uniform(-spec.hue, spec.hue)
    order = list(range(4))
    gen.shuffle(order)
    p[P_ORDER] = [float(order.index(op)) for op in range(4)]
    p[P_GRAY] = float(gen.random() < spec.grayscale_p)
    p[P_BLUR] = float(gen.random() < spec.blur_p)
    p[P_SIGMA] = gen.uniform(*spec.blur_sigma)
    p[P_SOLARIZE] = float(gen.random() < spec.solarize_p)
    if kind == BANDS:
        p[P_BAND_SEED] = float(gen.getrandbits(24))  # exact in float32: the per-band values derive from it
        p[P_BAND_BRIGHT], p[P_BAND_CONTRAST] = spec.band_brightness, spec.band_contrast
        p[P_TILT_ON] = float(gen.random() < spec.jitter_p)
        p[P_TILT] = gen.uniform(-spec.spectral_tilt, spec.spectral_tilt)
        p[P_DROPOUT], p[P_DROP_RATE] = float(gen.random() < spec.band_dropout_p), spec.band_dropout_rate
        p[P_NOISE], p[P_NOISE_STD] = float(gen.random() < spec.noise_p), spec.noise_std
    return p


class ViewParams(NamedTuple):
    """Every random choice of one view: crop box (pixels of the source image), flips, quarter turns,
    photometric parameters."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    photometric: list[float]  # NUM_PARAMS values, columns P_*
    vflip: bool = False
    quarter_turns: int = 0

    def row(self) -> list[float]:
        """top, left, height, width, flip, vertical flip, quarter turns, then the photometric parameters: a
        view's row in the parameter tensor of the device path (:mod:`selfsup.views.device`)."""
        return [self.top, self.left, self.height, self.width, float(self.flip), float(self.vflip),
                float(self.quarter_turns), *self.photometric]


def draw_view_params(height: int, width: int, spec: CropSpec, gen: random.Random, kind: str = RGB) -> ViewParams:
    """Draw one view's parameters for a (height, width) image from the sample's generator.

    The single place where a view's randomness is consumed, in a fixed order (crop box, flip, the overhead
    flip and turn when asked, photometry): the per-sample path (:func:`make_view`) and the batched device path
    (:mod:`selfsup.views.device`) both call it, so a sample gets the same view whichever path makes it. Draws
    that a spec or kind does not use are not made, so adding an option leaves other runs' views unchanged."""
    top, left, h, w = crop_box(height, width, spec.scale, spec.ratio, gen)
    flip = gen.random() < spec.flip_p
    vflip = spec.vflip_p > 0 and gen.random() < spec.vflip_p
    turns = gen.randrange(4) if spec.rot90 else 0
    return ViewParams(top, left, h, w, flip, photometric_values(spec, gen, kind), vflip, turns)


def make_view(image: torch.Tensor, spec: CropSpec, size: int, gen: random.Random,
              kind: str = RGB) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1: the cropped, resized, flipped (and turned) float view (C, size, size) and its photometric
    parameters."""
    p = draw_view_params(image.shape[-2], image.shape[-1], spec, gen, kind)
    return view_from_params(image, p, size), torch.tensor(p.photometric)


def view_from_params(image: torch.Tensor, p: ViewParams, size: int) -> torch.Tensor:
    """Stage 1 from drawn parameters: crop, resize, flip (and turn); ``make_view`` is draw + this, and the view
    dataset calls the two apart when a method asks for the views' geometry (``ViewSpec.boxes``)."""
    view = resized_crop(image, p.top, p.left, p.height, p.width, size)
    if p.flip:
        view = view.flip(-1)
    if p.vflip:
        view = view.flip(-2)
    if p.quarter_turns:
        view = torch.rot90(view, p.quarter_turns, dims=(-2, -1))
    return view


# -- stage 2: batched photometry ---------------------------------------------------------------------------------
_LUMA = (0.299, 0.587, 0.114)
# RGB <-> YIQ: a hue shift is a rotation of the chroma plane (I, Q) around the luma axis.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of a (B, 3, H, W) batch, shape (B, 1, H, W)."""
    return _LUMA[0] * x[:, 0:1] + _LUMA[1] * x[:, 1:2] + _LUMA[2] * x[:, 2:3]


def _column(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, target: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (target + _column(factor) * (x - target)).clamp_(0, 1)


def hue_rotation(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by ``shift`` turns as a rotation in YIQ space.

    A linear stand-in for ColorJitter's HSV hue shift: one 3x3 matrix per image instead of an RGB->HSV->RGB
    round trip (about 30x cheaper on CPU); both turn the colour wheel by the same angle for grey-free colours.
    """
    angle = 2 * math.pi * shift.to(x.dtype)
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.zeros(len(x), 3, 3, dtype=x.dtype, device=x.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    matrix = _YIQ_TO_RGB.to(x) @ rotation @ _RGB_TO_YIQ.to(x)
    return torch.bmm(matrix, x.flatten(2)).view_as(x).clamp_(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma; kernel ~10% of the image side (SimCLR), odd, >= 3."""
    h, w = x.shape[-2:]
    radius = max(3, int(0.1 * min(h, w)) // 2 * 2 + 1) // 2
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    weights = torch.exp(-0.5 * (offsets[None] / sigma.to(x)[:, None]) ** 2)
    weights = weights / weights.sum(1, keepdim=True)  # (B, k)
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    rows = sum(_column(weights[:, i]) * padded[..., i:i + w] for i in range(2 * radius + 1))
    return sum(_column(weights[:, i]) * rows[..., i:i + h, :] for i in range(2 * radius + 1))


def _brightness(x, p):
    return x.mul_(_column(p[:, P_BRIGHT])).clamp_(0, 1)


def _contrast(x, p):
    mean = (grayscale(x) if x.shape[1] == 3 else x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, p[:, P_CONTRAST])


def _saturation(x, p):
    return _blend(x, grayscale(x), p[:, P_SAT])


def _hue(x, p):
    return hue_rotation(x, p[:, P_HUE])


def _gray(x, p):
    return grayscale(x).expand_as(x)


def _blur(x, p):
    return gaussian_blur(x, p[:, P_SIGMA].clamp_min(1e-3))


def _solarize(x, p):
    return torch.where(x >= 0.5, 1 - x, x)


def _photometric(kinds: frozenset[str], apply, gate: int | None = None) -> ViewOp:
    return ViewOp(frozenset(kinds), "photometry", apply, gate)


# The colour jitter ops run first, each image in its own random order (P_ORDER); the rest follow in registry
# order. Brightness and contrast act on a whole 8-bit picture; the others need colour, or a display-referred
# intensity (solarize).
_JITTER = ("brightness", "contrast", "saturation", "hue")
VIEW_OPS.add("brightness", _photometric({RGB, GRAY}, _brightness, P_JITTER))
VIEW_OPS.add("contrast", _photometric({RGB, GRAY}, _contrast, P_JITTER))
VIEW_OPS.add("saturation", _photometric({RGB}, _saturation, P_JITTER))
VIEW_OPS.add("hue", _photometric({RGB}, _hue, P_JITTER))
VIEW_OPS.add("grayscale", _photometric({RGB}, _gray, P_GRAY))
VIEW_OPS.add("gaussian_blur", _photometric(ALL_KINDS, _blur, P_BLUR))
VIEW_OPS.add("solarize", _photometric({RGB, GRAY}, _solarize, P_SOLARIZE))


def _apply_to(x: torch.Tensor, params: torch.Tensor, mask: torch.Tensor, fn) -> torch.Tensor:
    """Apply ``fn`` to the images selected by ``mask`` only (work proportional to how many are selected)."""
    index = mask.nonzero().flatten()
    if len(index):
        x[index] = fn(x[index], params[index])
    return x


def apply_photometric(x: torch.Tensor, params: torch.Tensor, kind: str | None = None) -> torch.Tensor:
    """Stage 2 on a batch of views (B, C, H, W) in [0, 1] with their parameters (B, NUM_PARAMS), for images of
    channel kind ``kind`` (None: rgb for 3 channels, gray for 1, bands otherwise): only the operations of
    :data:`VIEW_OPS` allowed on that kind; returns a new tensor."""
    kind = kind or default_channel_kind(x.shape[1], raw=False)
    if kind not in ALL_KINDS:
        raise ValueError(f"unknown channel kind {kind!r}; one of {', '.join(sorted(ALL_KINDS))}")
    x = x.clone()
    params = params.to(x.device)
    allowed = {name: op for name, op in ((n, VIEW_OPS.get(n)) for n in VIEW_OPS.names())
               if op.stage == "photometry" and kind in op.kinds}
    jitter, rank = params[:, P_JITTER] > 0.5, params[:, P_ORDER]
    for slot in range(4):  # each image applies its jitter ops in its own random order
        for op_index, name in enumerate(_JITTER):
            if name in allowed:
                x = _apply_to(x, params, jitter & (rank[:, op_index] == slot), allowed[name].apply)
    for name, op in allowed.items():
        if name not in _JITTER:
            x = _apply_to(x, params, params[:, op.gate] > 0.5, op.apply)
    return x
