"""Views made on the training device, a whole batch at a time (``data.augment=device``).

The DataLoader workers then only fetch each sample's image (uint8, or float in [0, 1]) and draw its views' parameters with
:func:`~selfsup.views.augment.draw_view_params`, the very calls :func:`~selfsup.views.augment.make_view`
makes: both paths see the same crop boxes, flips and colour parameters, sample by sample, and the
reproducibility rules of docs/ARCHITECTURE.md hold unchanged. Why: the per-sample stage 1 pays torch's dispatch cost
once per view, and its CPU time competes with the training step for the cores. Batched, the same work costs
less CPU in all (demo recipe, 2-core machine: ~120 ms of worker time per batch of 128 became ~25 ms in the
workers plus ~40 ms in the training process), and on a GPU it leaves the CPU to decoding.

Per batch, on the device, for each crop group (views of one size):

1. crop + resize + flip of all the group's views in one batched call (:func:`crop_resize_flip`);
2. the photometric stage (:func:`~selfsup.views.augment.apply_photometric`, already batched), once for the
   group's views together;
3. normalisation.

Patch masks stay where they were, drawn per sample in the workers. The images of a batch must share one size
(arrays, the embedded datasets, the decoded cache of :mod:`selfsup.data.cache`).

**Resampling as matrix products.** Bilinear resizing is separable: view = Wy @ image @ Wx^T, where row j of
Wy (size x H) holds the weights of output row j over the source rows. Building Wy and Wx per view puts the
crop box (zero weight outside it), the flip (Wx's rows reversed) and the filter in the weights, and two
batched matmuls (rows, then columns) do every view of the group. Chosen over ``grid_sample`` / ``roi_align``
because the weights can be exactly those of ``F.interpolate(bilinear, align_corners=False, antialias=...)``
that ``make_view`` uses, antialias included (a triangle filter widened by the downscale factor; a
``grid_sample`` takes one bilinear sample per output pixel, so it aliases on downscaling crops, and
``roi_align`` reads neighbours outside the box at its edges, where make_view clamps). The device path thus
equals the worker path up to float rounding, for upscaling and downscaling crops alike
(tests/test_device_augment.py). The cost: dense weights, size x H and size x W per view, and
size x C x W x (H + size) multiply-adds per view, most of them on zero weights; an accelerator's matmul units
absorb that, and it is small at the image sizes of a CPU run (32 px: ~15 ms for 256 views on one shared
core). Large source images (e.g. 500 px photographs) are better decoded to a smaller fixed size first:
``data.cache``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from selfsup.views.augment import apply_photometric
from selfsup.views.preprocess import Preprocess
from selfsup.views.spec import ViewSpec

# Columns of a view's parameter row (ViewParams.row()): the crop box in pixels of the source image, the flips
# as 0/1, the quarter turns, then the photometric parameters (columns P_* of selfsup.views.augment).
G_TOP, G_LEFT, G_HEIGHT, G_WIDTH, G_FLIP, G_VFLIP, G_TURNS = range(7)
NUM_GEOMETRY = 7
GEOMETRY, PHOTOMETRIC = slice(0, NUM_GEOMETRY), slice(NUM_GEOMETRY, None)


def resize_weights(start: torch.Tensor, length: torch.Tensor, size: int, source: int) -> torch.Tensor:
    """(N, size, source) weights that resample the window [start, start + length) of a source axis to
    ``size`` samples, as ``F.interpolate(mode="bilinear", align_corners=False)`` does along one axis.

    PyTorch's rule (aten UpSampleKernel, ``_compute_weights_aa``): output sample j sits at ``center = scale *
    (j + 0.5)`` with ``scale = length / size``; source pixel i (counted from the window start) weighs
    ``max(0, 1 - |i + 0.5 - center| / max(scale, 1))``, restricted to the window and normalised to sum 1.
    Upscaling (scale <= 1) this is bilinear interpolation with the edge clamped, exactly what
    ``antialias=False`` computes; downscaling it is the antialias filter (``make_view`` asks for antialias
    exactly when a side shrinks, and an axis that does not shrink gets plain bilinear either way).
    """
    start, length = start.float(), length.float()  # float32 as PyTorch's own kernel (and MPS has no float64)
    scale = (length / size)[:, None, None]
    center = scale * (torch.arange(size, dtype=torch.float32, device=start.device)[None, :, None] + 0.5)
    pixel = torch.arange(source, dtype=torch.float32, device=start.device)[None, None, :] - start[:, None, None]
    weights = (1 - (pixel + 0.5 - center).abs() / scale.clamp_min(1)).clamp_min(0)
    weights = weights * ((pixel >= 0) & (pixel < length[:, None, None]))
    return weights / weights.sum(-1, keepdim=True)


def crop_resize_flip(images: torch.Tensor, geometry: torch.Tensor, size: int) -> torch.Tensor:
    """All views of one crop group at once: images (B, C, H, W), uint8 or float in [0, 1], and their views'
    geometry (B, V, NUM_GEOMETRY) (columns G_*) -> float views (B, V, C, size, size) in [0, 1]."""
    batch, views = geometry.shape[:2]
    channels, height, width = images.shape[-3:]
    rows = geometry.reshape(-1, NUM_GEOMETRY).to(images.device)
    wy = resize_weights(rows[:, G_TOP], rows[:, G_HEIGHT], size, height)
    wx = resize_weights(rows[:, G_LEFT], rows[:, G_WIDTH], size, width)
    flip, vflip = rows[:, G_FLIP] > 0.5, rows[:, G_VFLIP] > 0.5
    wx = torch.where(flip[:, None, None], wx.flip(1), wx)  # a mirrored view reads its columns right to left
    wy = torch.where(vflip[:, None, None], wy.flip(1), wy)  # and an upside-down one its rows bottom to top
    # Rows first, with the V views of an image stacked along M and its channels along N: each image is read
    # once and never copied per view or channel. Then columns, per view.
    x = images.float().permute(0, 2, 1, 3).reshape(batch, height, channels * width)
    resized_rows = torch.bmm(wy.view(batch, views * size, height), x)  # (B, V * size, C * W)
    out = torch.bmm(resized_rows.view(batch * views, size * channels, width), wx.transpose(1, 2))
    out = out.view(batch, views, size, channels, size).transpose(2, 3)
    if images.dtype == torch.uint8:
        out = out.div(255)
    out = out.clamp(0, 1)
    turns = rows[:, G_TURNS].round().long().view(batch, views)
    for k in range(1, 4):  # quarter turns after the flips, as make_view applies them
        selected = (turns == k).nonzero(as_tuple=True)
        if len(selected[0]):
            out[selected] = torch.rot90(out[selected], k, dims=(-2, -1))
    return out


@dataclass(frozen=True)
class ResizeRamp:
    """Progressive resizing (``data.progressive_resize``, :class:`selfsup.config.sections.ProgressiveResize`):
    the side of the full-size views at a training progress in [0, 1]. ``start_size`` until progress ``start``,
    then linear to ``final_size`` at ``end``, rounded (halves up) to the nearest multiple of ``multiple`` within
    [start_size, final_size]; ``final_size`` from ``end`` on, exactly."""

    start_size: int
    final_size: int
    start: float
    end: float
    multiple: int = 8

    def size_at(self, progress: float) -> int:
        if progress >= self.end:
            return self.final_size
        if progress <= self.start:
            return self.start_size
        t = (progress - self.start) / (self.end - self.start)
        size = self.start_size + t * (self.final_size - self.start_size)
        return min(self.final_size, max(self.start_size, int(size / self.multiple + 0.5) * self.multiple))

    def scaled(self, size: int, progress: float) -> int:
        """A crop of its own ``size`` (multi-crop's small crops) at ``progress``: shrunk in proportion."""
        return max(1, round(size * self.size_at(progress) / self.final_size))


class DeviceViews:
    """The device stage for one method's :class:`ViewSpec`: turns a batch as the collate step delivers it in
    device mode (``images`` (B, C, H, W) and ``view_params`` (B, views, NUM_GEOMETRY + NUM_PARAMS), already on
    the device) into the batch the method expects (``views``: normalised float (B, C, size, size) per view,
    in ``ViewSpec`` order; crops without a size of their own take ``preprocess.image_size``, and the views are
    normalised with its mean and std). Every other key passes through. With a :class:`ResizeRamp` the views
    of a step at ``progress`` take its sizes instead (the crop boxes are the same: only the output grid
    shrinks)."""

    def __init__(self, views: ViewSpec, preprocess: Preprocess, channel_kind: str | None = None,
                 ramp: ResizeRamp | None = None):
        self.groups = [(crop.count, crop.size or preprocess.image_size) for crop in views.crops]
        self.mean, self.std = preprocess.mean_std()
        self.kind, self.ramp = channel_kind, ramp

    def sizes_at(self, progress: float) -> list[int]:
        """The side of each crop group's views at ``progress``."""
        if self.ramp is None:
            return [size for _, size in self.groups]
        return [self.ramp.scaled(size, progress) for _, size in self.groups]

    def __call__(self, batch: dict, progress: float = 1.0) -> dict:
        images = batch["images"]
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        views, first = [], 0
        for (count, _), size in zip(self.groups, self.sizes_at(progress)):
            params = batch["view_params"][:, first:first + count]  # (B, count, NUM_GEOMETRY + NUM_PARAMS)
            group = crop_resize_flip(images, params[..., GEOMETRY], size)  # (B, count, C, size, size)
            # One photometric call for the whole group: views and their parameters stacked view-major.
            flat = group.transpose(0, 1).reshape(-1, *group.shape[2:])
            photometric = params[..., PHOTOMETRIC].transpose(0, 1).reshape(flat.shape[0], -1)
            views.extend(((apply_photometric(flat, photometric, self.kind) - mean) / std).chunk(count))
            first += count
        rest = {key: value for key, value in batch.items() if key not in ("images", "view_params")}
        return {**rest, "views": views}


def seconds_per_batch(batches: Iterable[dict], prepare: Callable[[dict], dict], count: int,
                      sync: Callable[[], None] = lambda: None) -> float:
    """Mean seconds from asking for a batch to holding its views on the device (data wait + augmentation),
    over ``count`` batches after one warm-up batch (worker start-up, first allocations).

    Used by ``data.augment=auto``. The training step does not run in between, so the workers do not compete
    with it for the CPU here as they do in training: the figure is the cost of each path alone."""
    batches = iter(batches)
    sync()
    prepare(next(batches))
    sync()
    start = time.perf_counter()
    for _ in range(count):
        prepare(next(batches))
        sync()
    return (time.perf_counter() - start) / count
