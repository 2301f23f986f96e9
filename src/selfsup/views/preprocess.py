"""The one value that says how pixels become a model's input: image size and per-channel normalisation.

``Preprocess`` travels with a backbone (saved in its export metadata), feeds the view pipeline's last step
(normalisation) and the evaluation transform (:meth:`Preprocess.__call__`: resize, centre, normalise).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from selfsup.data.audio_frontend import audio_eval_view


@dataclass(frozen=True)
class Preprocess:
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        object.__setattr__(self, "image_size", int(self.image_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} entries but std has {len(self.std)}")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def mean_std(self, ndim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as float32 tensors shaped to broadcast over (B, C, H, W) (``ndim=4``), (C, H, W) or a batch
        of volumes (B, C, D, H, W) (``ndim=5``)."""
        shape = (1, -1) + (1,) * (ndim - 2) if ndim >= 4 else (-1, 1, 1)
        return (torch.tensor(self.mean, dtype=torch.float32).view(shape),
                torch.tensor(self.std, dtype=torch.float32).view(shape))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float pixels in [0, 1], (B, C, H, W) or (C, H, W) -> normalised."""
        mean, std = self.mean_std(pixels.ndim)
        return (pixels - mean.to(pixels.device)) / std.to(pixels.device)

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean_std(images.ndim)
        return images * std.to(images.device) + mean.to(images.device)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """The evaluation transform of one (C, H, W) image or (C, D, H, W) volume, uint8 or float in [0, 1]
        (:func:`eval_transform`)."""
        return eval_transform(image, self.image_size, self.mean, self.std)

    def to_json(self) -> dict:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}


def eval_transform(image: torch.Tensor, image_size: int, mean, std) -> torch.Tensor:
    """(C, H, W), uint8 or float in [0, 1] (windowed raw data, :mod:`selfsup.data.pixels`) -> float32
    (len(mean), image_size, image_size), normalised.

    A single-channel image is repeated to ``len(mean)`` channels; any other channel mismatch is an error.
    A volume (C, D, H, W) (the field kind ``volume``) is resized trilinearly to ``image_size``^3 as a whole
    (no centre crop: a scan's extent is its field of view) and normalised the same way; so is a video (C, T, H, W)
    (the field kind ``video``: its frames resampled to ``image_size``). A waveform (1, L) (the field kind
    ``audio``) becomes its centred log-mel spectrogram (:func:`selfsup.views.audio.audio_eval_view`).
    """
    if isinstance(image, torch.Tensor) and image.ndim == 2:  # a waveform (1, L), the field kind audio
        unit = audio_eval_view(image, image_size)  # the centred image_size frames' log-mel, (1, size, size)
        return (unit - torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)) / \
            torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4):
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected an image tensor of shape (C, H, W) or a volume (C, D, H, W), got {got}")
    channels = len(mean)
    if image.shape[0] != channels:
        if image.shape[0] == 1:
            image = image.expand(channels, *image.shape[1:])
        else:
            raise ValueError(
                f"image has {image.shape[0]} channels but mean/std have {channels} entries"
            )
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(f"expected a uint8 or float image, got {image.dtype}")
    if image.ndim == 4:
        return _volume_transform(image, image_size, mean, std)
    if tuple(image.shape[-2:]) != (image_size, image_size):  # already that square (CIFAR at 32 px): nothing to do
        image = TF.resize(image, [image_size], antialias=True)  # shorter side -> image_size
        image = TF.center_crop(image, [image_size, image_size])
    image = image.float().div_(255.0) if image.dtype == torch.uint8 else image.float().clamp(0, 1)
    return TF.normalize(image, list(mean), list(std))


def _volume_transform(volume: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    unit = volume.float().div_(255.0) if volume.dtype == torch.uint8 else volume.float().clamp(0, 1)
    if tuple(unit.shape[1:]) != (size, size, size):
        unit = F.interpolate(unit[None], size=(size, size, size), mode="trilinear", align_corners=False)[0]
    shape = (-1, 1, 1, 1)
    return (unit - torch.tensor(mean, dtype=torch.float32).view(shape)) / torch.tensor(std, dtype=torch.float32).view(shape)
