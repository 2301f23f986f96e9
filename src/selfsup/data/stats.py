"""Per-channel image statistics of a source, for normalisation.

- :func:`channel_stats`: mean and std in [0, 1] units of a sample of the images as the pipeline sees them (8-bit
  pictures, or windowed raw data), when nothing better is known.
- :func:`compute_stats`: the statistics of raw domain data in its own units (``selfsup data stats DIR``), which
  fix its pixel window (:mod:`selfsup.data.pixels`) and its normalisation; saved beside the data
  (:data:`STATS_FILE`) or anywhere (``data.stats``), and read by the runs.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from selfsup.data.decode import DecodeError
from selfsup.data.pixels import PixelWindow, percentile_keys
from selfsup.data.sources import ArraySource, DataError, ImageSource, num_workers_for_io
from selfsup.files import write_json_atomic


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
                if image.dtype != torch.uint8:  # windowed raw data, already in [0, 1]: in the units of uint8
                    x = x * 255.0
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


# -- dataset statistics of raw (domain) data ------------------------------------------------------------------
STATS_FILE = ".selfsup-stats.json"  # in the data folder (hidden: the folder scan skips it); `selfsup data stats`
STATS_VERSION = 1
PERCENTILES = (0.5, 1.0, 2.0, 5.0, 25.0, 50.0, 75.0, 95.0, 98.0, 99.0, 99.5)
CLIP_CHOICES = ((0.5, 99.5), (1.0, 99.0), (2.0, 98.0))  # windows whose unit mean/std the file keeps
_FLOAT_BINS = 8192
_FLOAT_RANGE_IMAGES = 64  # images that fix the histogram range of float data (values outside go to end bins)


def raw_pixels(source: ImageSource, index: int) -> np.ndarray:
    """Image ``index`` in raw units: the source's ``get_raw`` where it has one, else its uint8 pixels."""
    get_raw = getattr(source, "get_raw", None)
    return get_raw(index) if get_raw is not None else source.get_image(index).numpy()


@dataclass
class DatasetStats:
    """Per-channel statistics of a source in raw units: exact mean, std, min, max over the images used, and
    percentiles from per-channel histograms (exact bins for 8/16-bit integers, ``_FLOAT_BINS`` bins for float
    data). ``unit`` holds, for each window of :data:`CLIP_CHOICES` and the full ``"0-100"`` range, the mean and
    std of the windowed [0, 1] values that normalisation uses. ``images < files`` means a sample was used."""

    channels: int
    dtype: str
    files: int
    images: int
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    percentiles: dict[str, list[float]]
    unit: dict[str, dict[str, list[float]]]
    fingerprint: str = ""
    source: str = ""
    skipped: list[list[str]] = field(default_factory=list)

    def window(self, clip: tuple[float, float] | None) -> PixelWindow:
        """The pixel window of ``clip`` percentiles (None: min..max). 8-bit data keeps its 0..255 range
        whatever ``clip`` says: it is already display-ready, and clipping it would only stretch contrast."""
        if self.dtype == "uint8":
            return PixelWindow.full_range("uint8", self.channels)
        if clip is None:
            return PixelWindow(tuple(self.min), tuple(self.max))
        low, high = (self.percentiles.get(key) for key in percentile_keys(clip))
        if low is None or high is None:
            raise DataError(f"the statistics hold the percentiles {', '.join(self.percentiles)}, not {clip}; "
                            f"recompute them (selfsup data stats) or use data.clip_percentiles among "
                            f"{[list(c) for c in CLIP_CHOICES]}")
        return PixelWindow(tuple(low), tuple(high))

    def unit_mean_std(self, clip: tuple[float, float] | None) -> tuple[list[float], list[float]] | None:
        """Mean and std of the data windowed by :meth:`window` of ``clip`` (None when the file lacks them)."""
        entry = self.unit.get("dtype" if self.dtype == "uint8" else _clip_key(clip))
        return (entry["mean"], entry["std"]) if entry else None

    def to_json(self) -> dict:
        return {"version": STATS_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> "DatasetStats":
        if data.get("version") != STATS_VERSION:
            raise DataError(f"statistics file version {data.get('version')} is not {STATS_VERSION}; recompute it "
                            "with `selfsup data stats DIR`")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _clip_key(clip: tuple[float, float] | None) -> str:
    return "0-100" if clip is None else "-".join(percentile_keys(clip))


class _Histograms:
    """Per-channel value histograms, exact for integer dtypes of at most 16 bits."""

    def __init__(self, dtype: np.dtype, channels: int, float_range: tuple[float, float] | None):
        self.dtype, self.channels = dtype, channels
        if dtype.kind in "iu" and dtype.itemsize <= 2:
            info = np.iinfo(dtype)
            self.offset, self.bins, self.width = -int(info.min), int(info.max) - int(info.min) + 1, 1.0
            self.start = float(info.min)
        else:
            lo, hi = float_range or (0.0, 1.0)
            hi = hi if hi > lo else lo + 1.0
            self.start, self.bins, self.width = lo, _FLOAT_BINS, (hi - lo) / _FLOAT_BINS
        self.counts = np.zeros((channels, self.bins), np.int64)
        self._pending: list[np.ndarray] = []
        self._pending_values = 0
        # exact moments and extremes over the finite values, beside the binned counts
        self.total, self.total_sq = np.zeros(channels), np.zeros(channels)
        self.low, self.high = np.full(channels, np.inf), np.full(channels, -np.inf)
        self.count = np.zeros(channels, np.int64)

    def add(self, array: np.ndarray) -> None:
        """Count the values of one (C, ...) image; buffered, since one bincount over 65536 bins costs as much
        as counting a million values."""
        self._pending.append(array.reshape(self.channels, -1))
        self._pending_values += self._pending[-1].shape[1]
        if self._pending_values >= 1 << 20:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        flat = np.concatenate(self._pending, axis=1)
        self._pending, self._pending_values = [], 0
        x = flat.astype(np.float64)
        if flat.dtype.kind == "f":
            x = np.where(np.isfinite(x), x, np.nan)
        self.total += np.nansum(x, 1)
        self.total_sq += np.nansum(x * x, 1)
        self.low, self.high = np.fmin(self.low, np.nanmin(x, 1)), np.fmax(self.high, np.nanmax(x, 1))
        self.count += np.isfinite(x).sum(1)
        for c in range(self.channels):
            values = flat[c]
            if self.width == 1.0 and values.dtype.kind in "iu":
                index = values.astype(np.int64) + self.offset
            else:
                finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
                index = np.clip(((finite.astype(np.float64) - self.start) / self.width).astype(np.int64), 0,
                                self.bins - 1)
            self.counts[c] += np.bincount(index, minlength=self.bins)

    def centres(self) -> np.ndarray:
        return self.start + (np.arange(self.bins) + (0.0 if self.width == 1.0 else 0.5)) * self.width

    def percentile(self, q: float, low: np.ndarray, high: np.ndarray) -> list[float]:
        centres, out = self.centres(), []
        for c in range(self.channels):
            cumulative = np.cumsum(self.counts[c])
            total = cumulative[-1]
            if total == 0:
                out.append(0.0)
                continue
            i = int(np.searchsorted(cumulative, q / 100.0 * total, side="left"))
            out.append(float(np.clip(centres[min(i, self.bins - 1)], low[c], high[c])))
        return out

    def unit(self, low: Sequence[float], high: Sequence[float]) -> dict[str, list[float]]:
        """Mean and std of the values windowed to [0, 1] by (low, high), from the bins."""
        centres, means, stds = self.centres(), [], []
        for c in range(self.channels):
            weights = self.counts[c].astype(np.float64)
            total = weights.sum() or 1.0
            unit = np.clip((centres - low[c]) / max(high[c] - low[c], 1e-12), 0.0, 1.0)
            mean = float((weights * unit).sum() / total)
            var = float((weights * (unit - mean) ** 2).sum() / total)
            means.append(mean)
            stds.append(max(np.sqrt(var), 1e-6))
        return {"mean": means, "std": stds}


def compute_stats(source: ImageSource, max_images: int = 10000, seed: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> DatasetStats:
    """Stream the raw pixels of up to ``max_images`` images of ``source`` (all of them when it has fewer; a
    deterministic sample from ``seed`` otherwise) into :class:`DatasetStats`. Images that fail to decode are
    skipped and listed (``skipped``); ``progress(done, total)`` is called as images are read."""
    n = len(source)
    if n == 0:
        raise DataError(f"{source.name}: no images to compute statistics from")
    indices = np.arange(n) if n <= max_images else np.sort(
        np.random.default_rng(seed).choice(n, size=max_images, replace=False))
    skipped: list[list[str]] = []

    def load(i: int) -> np.ndarray | None:
        try:
            return raw_pixels(source, int(i))
        except DecodeError as error:
            skipped.append([getattr(error, "path", None) or f"{source.name}[{int(i)}]", str(error)])
            return None

    with ThreadPoolExecutor(num_workers_for_io()) as pool:  # decoders release the GIL
        first = next((a for a in pool.map(load, indices[:8]) if a is not None), None)
        if first is None:
            raise DataError(f"{source.name}: none of the first sampled images could be read: {skipped[:3]}")
        channels, dtype = int(first.shape[0]), first.dtype
        float_range = None
        if not (dtype.kind in "iu" and dtype.itemsize <= 2):  # float (or 32-bit) data: range from a first sample
            sample = [a for a in pool.map(load, indices[:_FLOAT_RANGE_IMAGES]) if a is not None]
            values = np.concatenate([a.reshape(channels, -1) for a in sample], axis=1).astype(np.float64)
            values = values[:, np.isfinite(values).all(0)]
            float_range = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
            skipped.clear()
        histograms = _Histograms(dtype, channels, float_range)
        used = 0
        for done, array in enumerate(pool.map(load, indices), 1):
            if array is not None and array.shape[0] == channels:
                used += 1
                histograms.add(array)
            elif array is not None:
                skipped.append([f"{source.name}[{int(indices[done - 1])}]",
                                f"{array.shape[0]} bands where the others have {channels}"])
            if progress is not None:
                progress(done, len(indices))
    histograms.flush()
    if used == 0:
        raise DataError(f"{source.name}: none of the sampled images could be read")
    total, total_sq, count = histograms.total, histograms.total_sq, np.maximum(histograms.count, 1)
    low, high = histograms.low, histograms.high
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    percentiles = {key: histograms.percentile(q, low, high) for q, key in zip(PERCENTILES, percentile_keys(PERCENTILES))}
    unit = {_clip_key(None): histograms.unit(low, high)}
    if dtype == np.uint8:
        unit["dtype"] = histograms.unit([0.0] * channels, [255.0] * channels)
    for clip in CLIP_CHOICES:
        unit[_clip_key(clip)] = histograms.unit(*(percentiles[k] for k in percentile_keys(clip)))
    return DatasetStats(channels=channels, dtype=str(dtype), files=n, images=used, mean=mean.tolist(),
                        std=std.tolist(), min=low.tolist(), max=high.tolist(), percentiles=percentiles, unit=unit,
                        fingerprint=source.fingerprint(), source=source.name, skipped=skipped)


def save_stats(stats: DatasetStats, path: str | os.PathLike) -> Path:
    path = Path(path)
    write_json_atomic(path, stats.to_json())
    return path


def load_stats(path: str | os.PathLike) -> DatasetStats:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"data.stats: no statistics file {path}; compute it with `selfsup data stats DIR`") from None
    except (OSError, ValueError) as error:
        raise DataError(f"data.stats: cannot read {path}: {error}; recompute it with `selfsup data stats DIR`") from None
    return DatasetStats.from_json(data)


def default_stats_file(data_path: str | os.PathLike) -> Path:
    """Where ``selfsup data stats`` saves, and runs look for, a source's statistics: :data:`STATS_FILE` in a
    folder, ``<name>.stats.json`` beside a file."""
    path = Path(data_path)
    return path / STATS_FILE if path.is_dir() else path.with_suffix(".stats.json")


def window_raw_splits(splits, stats_path: str | os.PathLike | None, clip: Sequence[float] | None,
                      data_path: str | os.PathLike | None = None, log: Callable[[str], None] = lambda message: None):
    """Give the raw sources of ``splits`` (train, and test with the same window) their pixel window and
    normalisation: from ``stats_path`` (``data.stats``), else from the data's :func:`default_stats_file` when
    there is one, else computed now on the train split. The statistics used are kept as ``splits.train.stats`` (a run
    writes them to its folder). Sources that are not raw are left as they are."""
    train = splits.train
    if not getattr(train, "raw", False):
        return splits
    clip = None if clip is None else (float(clip[0]), float(clip[1]))
    candidate = Path(stats_path) if stats_path else (default_stats_file(data_path) if data_path else None)
    stats = None
    if candidate is not None and (stats_path or candidate.is_file()):
        stats = load_stats(candidate)
        if stats.channels != train.channels:
            raise DataError(f"data.stats: {candidate} describes {stats.channels}-band data, the images have "
                            f"{train.channels} bands; recompute it with `selfsup data stats DIR`")
        if stats.unit_mean_std(clip) is None:
            log(f"{candidate} holds no normalisation for data.clip_percentiles={list(clip)}; computing statistics")
            stats = None
        else:
            log(f"pixel statistics from {candidate} ({stats.images} images)")
    if stats is None:
        log(f"computing the pixel statistics of {min(len(train), 2000)} images of {train.name} (save them with "
            "`selfsup data stats DIR` to skip this)")
        stats = compute_stats(train, max_images=2000)
    window = stats.window(clip)
    mean, std = stats.unit_mean_std(clip)
    for source in (splits.train, splits.test):
        if source is not None and getattr(source, "raw", False):
            source.set_window(window, mean, std)
    train.stats = stats
    return splits
