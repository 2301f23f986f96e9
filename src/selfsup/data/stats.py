"""Per-channel image statistics of a source (for normalisation), from a deterministic sample of its images."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

import numpy as np
import torch

from selfsup.data.decode import DecodeError
from selfsup.data.sources import ArraySource, DataError, ImageSource, num_workers_for_io


def channel_stats(source: ImageSource, max_images: int = 2000, seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units over all pixels of up to ``max_images`` images, sampled
    deterministically from ``seed``. Returns the source's own ``mean``/``std`` when it carries them (the
    embedded datasets do). Images that fail to decode are skipped."""
    mean, std = getattr(source, "mean", None), getattr(source, "std", None)
    if mean is not None and std is not None:
        return list(mean), list(std)
    n = len(source)
    if n == 0:
        raise DataError(f"{source.name}: no images to compute channel statistics from")
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(n, size=min(n, max_images), replace=False))
    total = np.zeros(source.channels, np.float64)
    total_sq = np.zeros(source.channels, np.float64)
    count = 0

    def load(i: int) -> torch.Tensor | None:
        try:
            return source.get_image(int(i))
        except DecodeError:
            return None

    def accumulate(images: Iterable[torch.Tensor | None]) -> None:
        nonlocal count, total, total_sq
        for image in images:
            if image is not None:
                x = image.reshape(image.shape[0], -1).to(torch.float64)
                total += x.sum(1).numpy()
                total_sq += (x * x).sum(1).numpy()
                count += x.shape[1]

    if not isinstance(source, ArraySource):  # files (folders, shards): decoding releases the GIL
        with ThreadPoolExecutor(num_workers_for_io()) as pool:
            accumulate(pool.map(load, indices))
    else:
        accumulate(map(load, indices))
    if count == 0:
        raise DataError(f"{source.name}: none of the sampled images could be decoded")
    m = total / count
    var = np.maximum(total_sq / count - m * m, 0.0)
    return (m / 255.0).tolist(), (np.sqrt(var) / 255.0).tolist()
