"""Small images for the report as inline ``data:image/png;base64`` URIs (Pillow only)."""
from __future__ import annotations

import base64
import io
from html import escape

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from selfsup.data.pixels import display_bands


def displayable(image: torch.Tensor) -> np.ndarray:
    """A (C, H, W) image, uint8 or float in [0, 1], as an (H, W) or (H, W, 3) uint8 array for a PNG: gray,
    RGB, or the false colour of :func:`display_bands` for other band counts. A volume (C, D, H, W) is shown by
    its middle depth slice."""
    image = image.detach().cpu()
    if image.ndim == 4:
        image = image[:, image.shape[1] // 2]
    if image.dtype != torch.uint8:
        image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
    image = image[list(display_bands(image.shape[0]))]
    if image.shape[0] == 3:
        return image.permute(1, 2, 0).numpy()
    return image[0].numpy()


def png_data_uri(array: np.ndarray) -> str:
    """An (H, W) or (H, W, 3) uint8 array -> ``data:image/png;base64,...``."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def file_data_uri(path) -> str:
    """An image file on disk (PNG, JPEG, ...) re-encoded as an inline PNG URI."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def img_tag(image: torch.Tensor | np.ndarray, *, size: int = 64, caption: str | None = None,
            border: str | None = None, title: str | None = None) -> str:
    """A ``<figure>`` holding the image scaled to ``size`` CSS pixels (pixelated, so small images stay
    sharp), with an optional caption and coloured border."""
    array = image if isinstance(image, np.ndarray) else displayable(image)
    style = f"width:{size}px;height:{size}px"
    if border:
        style += f";outline:3px solid {border};outline-offset:-3px"
    tip = f' title="{escape(title)}"' if title else ""
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption is not None else ""
    return (f'<figure class="thumb"><img src="{png_data_uri(array)}" style="{style}" alt="{escape(caption or "")}"'
            f"{tip}>{cap}</figure>")


def center_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` and center-crop, as the evaluation transform does (no normalisation)."""
    image = TF.resize(image, [size], antialias=True)
    return TF.center_crop(image, [size, size])


def heatmap_overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.55) -> np.ndarray:
    """Blend a (gh, gw) heat map (any scale) over a (C, H, W) uint8 image shown in grey: the map is
    min-max scaled, upsampled to the image (nearest, so each patch stays a visible square) and coloured
    from dark blue (low) through green to yellow (high)."""
    grey = torch.from_numpy(displayable(image)).float()
    if grey.ndim == 3:
        grey = grey.mean(dim=2)
    height, width = grey.shape
    heat = heat.float()
    heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
    heat = torch.nn.functional.interpolate(heat[None, None], size=(height, width), mode="nearest")[0, 0]
    # A short viridis-like ramp: readable on white and in grey-scale print.
    anchors = torch.tensor([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                           dtype=torch.float32)
    position = heat * (len(anchors) - 1)
    lower = position.floor().long().clamp(max=len(anchors) - 2)
    fraction = (position - lower.float())[..., None]
    coloured = anchors[lower] * (1 - fraction) + anchors[lower + 1] * fraction
    blended = alpha * coloured + (1 - alpha) * grey[..., None]
    return blended.round().clamp(0, 255).to(torch.uint8).numpy()
