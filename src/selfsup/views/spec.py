"""What a method asks the data pipeline to deliver for each sample."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selfsup.views.masks import MaskStrategy


@dataclass(frozen=True)
class CropSpec:
    """A group of crops that share a resolution and an augmentation recipe."""

    count: int = 2
    size: int | None = None  # None: the run's data.image_size
    scale: tuple[float, float] = (0.2, 1.0)  # area fraction for random resized crop
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    # Overhead imagery (data.overhead): vertical flips and a random multiple of 90 degrees.
    vflip_p: float = 0.0
    rot90: bool = False
    # Measurements (channel kind "bands", selfsup.data.pixels): with probability jitter_p each band's brightness
    # and contrast move by up to these fractions, independently per band; a spectral tilt (a multiplicative
    # ramp across the bands, up to +-spectral_tilt at the ends) with the same probability; band dropout (each
    # band, at rate band_dropout_rate, flattened to its mean; one band always survives); Gaussian noise.
    band_brightness: float = 0.2
    band_contrast: float = 0.2
    spectral_tilt: float = 0.1
    band_dropout_p: float = 0.2
    band_dropout_rate: float = 0.2
    noise_p: float = 0.2
    noise_std: float = 0.02


@dataclass(frozen=True)
class MaskSpec:
    """Patch masks drawn per sample with the views and delivered as ``batch["masks"]`` (see
    :mod:`selfsup.views.masks`).

    ``strategy``: e.g. ``RandomMask(ratio=0.75)``; ``patch_size``: pixels per patch side (the ViT's patch
    size, or SimMIM's mask patch size on a ConvNet); ``views``: index of the masked view in the order of
    ``batch["views"]`` (tensors (B, ...)), or a tuple of indices (tensors (B, len(views), ...), each view
    masked independently).
    """

    strategy: "MaskStrategy"
    patch_size: int
    views: int | tuple[int, ...] = 0
    # Spatial dimensions of the patch grid: 2 for images ((rows, columns)), 3 for volumes ((depth, rows,
    # columns), patches numbered depth-major; the ``cube`` and ``tube`` strategies).
    dims: int = 2


@dataclass(frozen=True)
class TextSpec:
    """One caption per sample, chosen among the sample's captions from (seed, epoch, index) and tokenized to
    ``context_length`` token ids (open_clip's BPE, :mod:`selfsup.views.text`), delivered as ``batch["text"]``
    (B, context_length) int64."""

    context_length: int = 32


@dataclass(frozen=True)
class ViewSpec:
    """The views of one sample, as a list of crop groups (e.g. 2 global + N local crops), and optionally
    the patch masks that go with them and the sample's caption (image-text methods)."""

    crops: tuple[CropSpec, ...] = field(default_factory=lambda: (CropSpec(),))
    masks: MaskSpec | None = None
    text: TextSpec | None = None
    # Deliver each view's geometry as ``batch["boxes"]`` (B, views, 7): the crop box in pixels of the source
    # image (top, left, height, width), horizontal flip, vertical flip, quarter turns (0/1, 0/1, 0..3); the
    # columns G_* of selfsup.views.device. Dense methods match feature locations with it
    # (selfsup.views.geometry). Image views only; the views themselves do not change.
    boxes: bool = False

    @property
    def num_views(self) -> int:
        return sum(c.count for c in self.crops)

    def view_sizes(self, image_size: int) -> list[int]:
        """The side in pixels of every view, in the order of ``batch["views"]``."""
        return [crop.size or image_size for crop in self.crops for _ in range(crop.count)]


def with_every_crop(views: ViewSpec, **changes) -> ViewSpec:
    """The same views with ``changes`` (CropSpec fields) in every crop group."""
    return replace(views, crops=tuple(replace(crop, **changes) for crop in views.crops))


def overhead_views(views: ViewSpec) -> ViewSpec:
    """The same views with vertical flips (p=0.5) and 90-degree rotations in every crop group (``data.overhead``:
    imagery seen from above has no up)."""
    return with_every_crop(views, vflip_p=0.5, rot90=True)


def without_flips(views: ViewSpec) -> ViewSpec:
    """The same views with horizontal flips turned off in every crop group (``data.hflip: false``)."""
    return with_every_crop(views, flip_p=0.0)
