"""The ``moving-digits`` dataset (generated, *synthetic*): real handwritten digit strokes moving across a frame, the
embedded demo of the field kind ``video``.

Each video is 32 gray frames of 32 x 32 pixels. Its digit is one of the embedded ``digits-plain`` images
(:mod:`selfsup.data.digits`: the 8x8 handwritten digits of scikit-learn, rendered at random size, slant and
position), shrunk to a 16 x 16 sprite, that moves from a random start in a class-dependent direction
(``36 c`` degrees for digit ``c``, +-9 degrees) at a class-dependent speed (``0.6 + 0.08 c`` pixels a frame),
bouncing off the frame's edges (Moving MNIST's motion, Srivastava et al., ICML 2015), over a gray background
under per-pixel noise that is new in every frame. The label is the digit: its shape and its motion both tell
it, so a frame model and a clip model can both learn it, and motion is what a clip model has on top.

Train videos show train digits and test videos test digits (the held-out handwriting of ``digits-plain``).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.data.digits import CLASSES, make_digits
from selfsup.data.sources import DATASETS, DataError, DataSplits
from selfsup.data.video import VideoSource

FRAMES, SIDE, SPRITE = 32, 32, 16


def _sprites(images: np.ndarray) -> np.ndarray:
    """(N, 3, 32, 32) uint8 digits -> (N, 16, 16) float sprites in [0, 1]."""
    gray = torch.from_numpy(images[:, :1].astype(np.float32) / 255)
    return F.interpolate(gray, size=(SPRITE, SPRITE), mode="bilinear", antialias=True, align_corners=False)[:, 0].numpy()


def _bounce(position: np.ndarray, limit: float) -> np.ndarray:
    """Positions reflected into [0, limit] (a bounce off each wall)."""
    period = 2 * limit
    folded = np.mod(position, period)
    return np.where(folded > limit, period - folded, folded)


def generate_moving_digits(images: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Videos (N, 1, FRAMES, SIDE, SIDE) uint8 of the digits ``images`` (N, 3, 32, 32) with ``labels`` (N,)."""
    rng = np.random.default_rng(seed)
    sprites = _sprites(images)
    n = len(images)
    angle = 2 * np.pi * labels / 10 + rng.uniform(-0.157, 0.157, n)
    speed = 0.6 + 0.08 * labels
    limit = SIDE - SPRITE
    start = rng.uniform(0, limit, (n, 2))
    t = np.arange(FRAMES)
    ys = np.rint(_bounce(start[:, :1] + np.sin(angle)[:, None] * speed[:, None] * t, limit)).astype(int)
    xs = np.rint(_bounce(start[:, 1:] + np.cos(angle)[:, None] * speed[:, None] * t, limit)).astype(int)
    videos = np.empty((n, 1, FRAMES, SIDE, SIDE), np.uint8)
    for i in range(n):
        canvas = np.full((FRAMES, SIDE, SIDE), 0.15, np.float32)
        for f in range(FRAMES):
            y, x = ys[i, f], xs[i, f]
            region = canvas[f, y:y + SPRITE, x:x + SPRITE]
            np.maximum(region, 0.15 + 0.7 * sprites[i], out=region)
        canvas += rng.normal(0, 0.08, canvas.shape).astype(np.float32)
        videos[i, 0] = np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8)
    return videos


@functools.lru_cache(maxsize=2)
def _moving_sources(n_train: int, n_test: int, seed: int) -> DataSplits:
    digits = make_digits(n_train, n_test, style="plain")
    splits = {}
    for k, split in enumerate(("train", "test")):
        labels = digits[f"{split}_labels"]
        videos = generate_moving_digits(digits[f"{split}_images"], labels, seed * 2 + k)
        splits[split] = VideoSource(list(videos), labels=labels, classes=CLASSES, name=f"moving-digits/{split}",
                                    stats_of=splits.get("train"), flips_preserve_labels=False)
    return DataSplits(train=splits["train"], test=splits["test"])


@DATASETS.register("moving-digits")
def open_moving_digits(channels: int | None = None, n_train: int = 1000, n_test: int = 500, seed: int = 0) -> DataSplits:
    """The ``moving-digits`` dataset: :class:`~selfsup.data.video.VideoSource` splits of 32-frame gray videos,
    1,000 train and 500 test (10 classes, the digit), normalised by the train frames' mean and std."""
    if channels not in (None, 1):
        raise DataError(f"moving-digits is gray; leave data.channels unset or set it to 1, not {channels}")
    return _moving_sources(int(n_train), int(n_test), int(seed))


__all__ = ["FRAMES", "generate_moving_digits", "open_moving_digits"]
