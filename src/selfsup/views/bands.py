"""Photometric operations for measurements (channel kind ``bands``: multispectral, 16-bit, float data).

Colour jitter assumes three display-referred channels whose mix is a colour; a 13-band reflectance image or a
CT slice has no hue and no saturation, and inverting its bright half (solarize) makes no physical sense. What
does vary between acquisitions of the same scene is each band's gain and offset (sensor calibration,
atmosphere, illumination), a smooth change across wavelengths (haze, sun angle), a missing or noisy band.
So the views of such data vary exactly that, in the spirit of the augmentations of the remote-sensing SSL
papers (SeCo, Manas et al. 2021; SSL4EO-S12, Wang et al. 2022; SatMAE's spectral grouping, Cong et al. 2022):

- **band jitter** (gate ``P_JITTER``): each band's brightness and contrast scaled independently, by up to
  ``band_brightness`` / ``band_contrast``;
- **spectral tilt** (gate ``P_TILT_ON``, value ``P_TILT``): a multiplicative ramp across the band axis, ``1 - t`` at the first
  band to ``1 + t`` at the last;
- **band dropout** (gate ``P_DROPOUT``): each band at rate ``P_DROP_RATE`` flattened to its own mean (it
  carries no structure, and its normalised level stays in range); one band always survives;
- **noise** (gate ``P_NOISE``): additive Gaussian noise of std ``P_NOISE_STD`` (in [0, 1] units).

Per-band random values come from a hash of the view's ``P_BAND_SEED`` and the band index, integer arithmetic
that gives the same values on every device, so the worker path and the device path agree.
"""
from __future__ import annotations

import torch

from selfsup.views.augment import (
    BANDS,
    P_BAND_BRIGHT,
    P_BAND_CONTRAST,
    P_BAND_SEED,
    P_DROP_RATE,
    P_DROPOUT,
    P_JITTER,
    P_NOISE,
    P_NOISE_STD,
    P_TILT,
    P_TILT_ON,
    VIEW_OPS,
    ViewOp,
)

_MASK32 = 0xFFFFFFFF


def band_uniform(seeds: torch.Tensor, channels: int, salt: int) -> torch.Tensor:
    """(B, channels) values in [0, 1) from each row's seed and the band index: a 32-bit integer hash
    (multiply-xorshift rounds), exact on every device."""
    band = torch.arange(1, channels + 1, device=seeds.device, dtype=torch.int64)
    x = (seeds.to(torch.int64)[:, None] * 0x9E3779B1 + band[None] * 0x85EBCA77 + salt * 0xC2B2AE3D) & _MASK32
    for _ in range(3):
        x = ((x ^ (x >> 16)) * 0x45D9F3B) & _MASK32
    x = x ^ (x >> 16)
    return (x >> 8).to(torch.float32) / float(1 << 24)


def _column(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def band_jitter(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    channels, seeds = x.shape[1], params[:, P_BAND_SEED]
    gain = 1 + params[:, P_BAND_BRIGHT, None] * (2 * band_uniform(seeds, channels, 1) - 1)
    contrast = 1 + params[:, P_BAND_CONTRAST, None] * (2 * band_uniform(seeds, channels, 2) - 1)
    x = x * gain[..., None, None].to(x)
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (mean + contrast[..., None, None].to(x) * (x - mean)).clamp_(0, 1)


def spectral_tilt(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    channels = x.shape[1]
    position = torch.linspace(-1, 1, channels, device=x.device, dtype=x.dtype) if channels > 1 else \
        torch.zeros(1, device=x.device, dtype=x.dtype)
    ramp = 1 + params[:, P_TILT, None].to(x) * position[None]
    return (x * ramp[..., None, None]).clamp_(0, 1)


def band_dropout(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    channels = x.shape[1]
    draw = band_uniform(params[:, P_BAND_SEED], channels, 3)
    drop = draw < params[:, P_DROP_RATE, None]
    survivor = draw.argmax(1)  # the band least likely to drop always stays
    drop[torch.arange(len(x), device=x.device), survivor] = False
    mean = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    return torch.where(drop[..., None, None], mean, x)


def gaussian_noise(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    noise = torch.empty_like(x)
    for row, seed in enumerate(params[:, P_BAND_SEED].tolist()):  # its own generator: same noise on any path
        generator = torch.Generator(device=x.device).manual_seed(int(seed) * 4 + 1)
        noise[row] = torch.randn(x.shape[1:], generator=generator, device=x.device, dtype=x.dtype)
    return (x + _column(params[:, P_NOISE_STD]).to(x) * noise).clamp_(0, 1)


VIEW_OPS.add("band_jitter", ViewOp(frozenset({BANDS}), "photometry", band_jitter, P_JITTER))
VIEW_OPS.add("spectral_tilt", ViewOp(frozenset({BANDS}), "photometry", spectral_tilt, P_TILT_ON))
VIEW_OPS.add("band_dropout", ViewOp(frozenset({BANDS}), "photometry", band_dropout, P_DROPOUT))
VIEW_OPS.add("gaussian_noise", ViewOp(frozenset({BANDS}), "photometry", gaussian_noise, P_NOISE))
