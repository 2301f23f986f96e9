"""The pixel contract: what an ``image`` field holds, and how raw domain pixels get there.

An image (:data:`selfsup.fields.IMAGE`) is a ``(C, H, W)`` tensor of one of two kinds:

- ``uint8``: 8-bit pictures (photographs, scans, the embedded digits), value / 255 is the intensity;
- ``float32`` in [0, 1]: everything else (16-bit, float, N-band data) after its **pixel window**.

Views, the evaluation transform and the decoded cache take both kinds (:func:`to_unit` is the one place that
turns either into float intensities), so a 13-band 16-bit GeoTIFF travels the same pipeline as a JPEG.

Why a window: raw values have a physical unit (reflectance x 10^4, Hounsfield units, photon counts) and long
tails (clouds, glints, hot pixels). A per-channel window ``[low, high]``, by default the 1st and 99th
percentiles of the data's statistics (:mod:`selfsup.data.stats`), maps the bulk of the values to [0, 1] and
clips the outliers, so that one saturated pixel does not squeeze every other value into a few grey levels,
and so that the photometric augmentations (which work in [0, 1]) mean the same on every band. The
normalisation that follows uses the windowed data's own mean and std, never ImageNet constants.

Channel kinds (``channel_kind``) say which photometric operations make sense (:mod:`selfsup.views.augment`):

- ``"rgb"``: three colour channels of an 8-bit picture: colour jitter, grayscale, solarize;
- ``"gray"``: one channel of an 8-bit picture: brightness, contrast, solarize;
- ``"bands"``: measurements (N bands, or 16-bit / float data of any band count, e.g. CT): per-band
  brightness and contrast, band dropout, spectral tilt, noise; never the colour operations, which assume a
  display-referred RGB picture.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

CHANNEL_KINDS = ("rgb", "gray", "bands")


def to_unit(image: torch.Tensor) -> torch.Tensor:
    """Float32 intensities in [0, 1] of an image of either kind (uint8: / 255; float: as it is)."""
    if image.dtype == torch.uint8:
        return image.float().div_(255)
    return image.float()


def default_channel_kind(channels: int, raw: bool) -> str:
    """``"rgb"`` / ``"gray"`` for 8-bit pictures of 3 / 1 channels, ``"bands"`` for anything else."""
    if raw:
        return "bands"
    return {3: "rgb", 1: "gray"}.get(channels, "bands")


@dataclass(frozen=True)
class PixelWindow:
    """Per-channel ``[low, high]`` in raw units, mapped to [0, 1] (values outside are clipped)."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self):
        low = tuple(float(v) for v in self.low)
        high = tuple(float(max(h, lo + 1e-12)) for lo, h in zip(low, self.high))  # a constant band maps to 0
        if len(low) != len(high):
            raise ValueError(f"pixel window: {len(low)} low values for {len(high)} high values")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def channels(self) -> int:
        return len(self.low)

    @classmethod
    def full_range(cls, dtype: np.dtype | str, channels: int) -> "PixelWindow":
        """The whole range of an integer dtype (0..255, 0..65535, ...); [0, 1] for floats."""
        dtype = np.dtype(dtype)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return cls((float(max(info.min, 0)),) * channels, (float(info.max),) * channels)
        return cls((0.0,) * channels, (1.0,) * channels)

    def apply(self, array: np.ndarray) -> torch.Tensor:
        """Raw (C, ...) array of any numeric dtype -> float32 tensor in [0, 1]; NaN and inf become 0."""
        if array.shape[0] != self.channels:
            raise ValueError(f"image has {array.shape[0]} bands, the pixel window {self.channels}")
        shape = (-1,) + (1,) * (array.ndim - 1)
        low = np.asarray(self.low, np.float32).reshape(shape)
        scale = (1.0 / (np.asarray(self.high, np.float64) - np.asarray(self.low, np.float64))).astype(np.float32)
        unit = (array.astype(np.float32) - low) * scale.reshape(shape)
        np.nan_to_num(unit, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        return torch.from_numpy(np.clip(unit, 0.0, 1.0, out=unit))

    def to_json(self) -> dict:
        return {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_json(cls, data: dict) -> "PixelWindow":
        return cls(tuple(data["low"]), tuple(data["high"]))

    def digest(self) -> str:
        """Enters the fingerprints of windowed sources: another window is other pixels."""
        return ",".join(f"{lo:.9g}:{hi:.9g}" for lo, hi in zip(self.low, self.high))


def quantize_unit(image: torch.Tensor) -> np.ndarray:
    """Float [0, 1] (C, H, W) -> uint16 with 65536 levels: how windowed images are cached (16 bits survive)."""
    return np.rint(image.clamp(0, 1).numpy() * 65535.0).astype(np.uint16)


def unit_uint16_window(channels: int) -> PixelWindow:
    """The window of :func:`quantize_unit`'s output (back to the same [0, 1] values, to 1 / 65535)."""
    return PixelWindow((0.0,) * channels, (65535.0,) * channels)


def check_channel_kind(kind: str, channels: int, where: str = "data.channel_kind") -> str:
    if kind not in CHANNEL_KINDS:
        raise ValueError(f"{where} must be one of {', '.join(CHANNEL_KINDS)}, not {kind!r}")
    needed = {"rgb": 3, "gray": 1}.get(kind)
    if needed is not None and channels != needed:
        raise ValueError(f"{where}={kind} needs {needed} channel(s), but the data has {channels}; use "
                         f"{where}=bands for {channels}-channel data")
    return kind


def percentile_keys(percentiles: Sequence[float]) -> list[str]:
    """JSON keys of percentiles (``1`` -> ``"1"``, ``99.5`` -> ``"99.5"``)."""
    return [f"{p:g}" for p in percentiles]


def display_bands(channels: int) -> tuple[int, ...]:
    """The bands shown for a ``channels``-band image: itself for gray and RGB, the first band for two, else a
    false-colour composite of the first, middle and last band (short, middle, long wavelengths on a sensor
    whose bands are in wavelength order, as Sentinel-2's and Landsat's are)."""
    if channels in (1, 3):
        return tuple(range(channels))
    if channels == 2:
        return (0,)
    return (0, channels // 2, channels - 1)[::-1]  # red = the longest wavelength
