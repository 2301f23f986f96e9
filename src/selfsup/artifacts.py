"""Pictures a method draws of itself at the end of a run.

A method may override ``Method.reconstruct(images) -> {row name: (B, C, H, W)}`` (its default returns None):
for normalized images it returns rows of a picture in the same normalized space (MAE, SimMIM, CMAE: input,
masked input, reconstruction).
:func:`save_reconstructions` runs it on a few held-out images and writes one PNG grid to the run directory,
one row per entry and one column per image, so a reader sees at a glance what the pretext task learnt.
Nothing here knows which method it draws.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfsup.data.pixels import display_bands
from selfsup.methods.base import Method
from selfsup.views.preprocess import Preprocess

RECONSTRUCTIONS_FILE = "reconstructions.png"
PAD = 2  # white pixels between cells and around the grid
CELL = 96  # cells are enlarged (nearest neighbour) to at least this many pixels: 32 px images are too small


def _to_uint8(images: torch.Tensor, preprocess: Preprocess) -> np.ndarray:
    """(B, C, H, W) (or volumes (B, C, D, H, W): their middle slice) normalized -> (B, H, W, 3) uint8: one channel
    as grey, three as RGB, other band counts in
    the false colour of :func:`selfsup.data.pixels.display_bands`."""
    pixels = preprocess.denormalize(images.detach().float().cpu()).clamp(0, 1)
    if pixels.ndim == 5:  # volumes: the middle depth slice
        pixels = pixels[:, :, pixels.shape[2] // 2]
    pixels = pixels[:, list(display_bands(pixels.shape[1]))]
    pixels = pixels if pixels.shape[1] == 3 else pixels[:, :1].expand(-1, 3, -1, -1)
    return (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def image_grid(rows: dict[str, torch.Tensor], preprocess: Preprocess) -> np.ndarray:
    """An (H, W, 3) uint8 grid: one row per entry of ``rows`` (each (B, C, h, w), normalized), B columns."""
    arrays = [_to_uint8(images, preprocess) for images in rows.values()]
    count, h, w = arrays[0].shape[:3]
    scale = max(1, -(-CELL // max(h, w)))  # ceil: every cell at least CELL pixels on its longer side
    ch, cw = h * scale, w * scale
    grid = np.full((len(arrays) * (ch + PAD) + PAD, count * (cw + PAD) + PAD, 3), 255, dtype=np.uint8)
    for r, array in enumerate(arrays):
        for c in range(count):
            cell = array[c].repeat(scale, axis=0).repeat(scale, axis=1)
            top, left = PAD + r * (ch + PAD), PAD + c * (cw + PAD)
            grid[top:top + ch, left:left + cw] = cell
    return grid


@torch.no_grad()
def save_reconstructions(method, source, run_dir: str | Path, preprocess: Preprocess, count: int = 8) -> Path | None:
    """If ``method`` draws reconstructions, draw its rows for the first ``count`` images of ``source`` (the
    held-out split when there is one) and save them as ``run_dir/reconstructions.png``; return the path."""
    if len(source) == 0 or type(method).reconstruct is Method.reconstruct:
        return None  # nothing drawn (and no sample read: a graph or a table is not an image to preprocess)
    device = next(method.parameters()).device
    images = torch.stack([preprocess(source.get_image(i)) for i in range(min(count, len(source)))]).to(device)
    was_training = method.training
    method.eval()
    try:
        rows = method.reconstruct(images)
    finally:
        method.train(was_training)
    if rows is None:
        return None
    path = Path(run_dir) / RECONSTRUCTIONS_FILE
    Image.fromarray(image_grid(rows, preprocess)).save(path)
    return path


def save_method_pictures(method, source, run_dir: str | Path, preprocess: Preprocess, log) -> None:
    """:func:`save_reconstructions` at the end of a run, reported through ``log``. A failure is logged, never
    raised: the backbone is already saved, and a picture must not cost the run its evaluation."""
    try:
        path = save_reconstructions(method, source, run_dir, preprocess)
    except Exception as error:  # noqa: BLE001
        log(f"warning: could not draw the reconstructions: {type(error).__name__}: {error}")
        return
    if path is not None:
        log(f"reconstructions of held-out images saved to {path}")
