"""``data.cache``: decode an image folder once into a fixed-size uint8 memmap, and train from that.

Why: a folder source decodes every JPEG/PNG again in every epoch, and on a small machine decoding competes
with the training step for the same cores. Decoded once, a sample is a memory-mapped read; and since every
cached image has one size, batches of raw images can be stacked, which the device augmentation
(``data.augment=device``, :mod:`selfsup.views.device`) needs.

What is stored: each image's centre square resized to ``cache_size`` x ``cache_size`` (the same as resizing
the shorter side to ``cache_size`` and centre-cropping, without rounding the longer side), by the bilinear,
antialiased resize the views use. ``cache_size`` defaults to 1.25 x ``data.image_size``, so random resized
crops still have pixels to spare (the usual "resize to 1.25x, then crop" of ImageNet pipelines). The price:
crops see only the centre square of non-square images, at that resolution.

Raw domain folders (windowed float images, :mod:`selfsup.data.pixels`) are cached after their window, as
uint16 (65536 levels of [0, 1], so 16-bit data keeps its precision); the window is part of the fingerprint.

Where: ``<runs_dir>/.cache/<fingerprint>.u8`` (N, C, S, S) uint8 (uint16 for raw folders), plus ``<fingerprint>.json`` (shape,
the folder's file-list hash, labels, classes, files that failed while building). The fingerprint covers the
folder's path, its file list with sizes and mtimes (``FolderSource.fingerprint``), labels, channels and the
size: change any of them and a new cache is built; otherwise it is reused without decoding anything. The
.json is written last, after the .u8 is complete and renamed into place, so a crashed build is never reused.

Bad files: those the folder scan found are skipped and reported by the folder source as without a cache
(``bad_files``, written to ``bad_files.txt`` by the run); a file that went bad between the scan and the
build is skipped with a warning, like the DataLoader does for a file that fails mid-run, and added to
``bad_files``.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.data.decode import DecodeError
from selfsup.data.pixels import quantize_unit, unit_uint16_window
from selfsup.data.sources import ArraySource, DataError, FolderSource, _hash, num_workers_for_io
from selfsup.data.text import CaptionTable
from selfsup.files import atomic_path, write_json_atomic

CACHE_VERSION = 1
_CHUNK = 256  # images per task of the decoding pool: bounded bookkeeping for millions of files


def default_cache_size(image_size: int) -> int:
    return int(round(1.25 * image_size))


def fit_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) -> (C, size, size): the centre square, bilinear with antialias; uint8 in, uint8 out (rounded),
    float [0, 1] in, float [0, 1] out."""
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[None, :, top:top + side, left:left + side].float()
    out = F.interpolate(square, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)
    if image.dtype != torch.uint8:
        return out[0].clamp_(0, 1)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def _cache_dtype(source) -> np.dtype:
    return np.dtype(np.uint16) if getattr(source, "raw", False) else np.dtype(np.uint8)


def cache_fingerprint(source: FolderSource, size: int) -> str:
    return _hash(b"decoded-cache", str(CACHE_VERSION), os.path.abspath(source.root), source.fingerprint(),
                 str(size))


class CachedSource(ArraySource):
    """A folder's images as the decoded cache holds them: an :class:`ArraySource` over a read-only memmap
    (fixed size, so the device augmentation can batch it). Pickles as its file path, not its bytes, so that
    DataLoader workers started by ``spawn`` map the file instead of receiving a copy of it. The captions of
    a captioned folder come along (in memory, from the folder's scan), row-aligned with the cached images."""

    def __init__(self, path: str | os.PathLike, meta: dict, bad_files: list[tuple[str, str]],
                 captions: CaptionTable | None = None):
        self.path, self.meta = str(path), meta
        images = np.memmap(self.path, dtype=meta.get("dtype", "uint8"), mode="r", shape=tuple(meta["shape"]))
        window = unit_uint16_window(meta["shape"][1]) if images.dtype == np.uint16 else None
        super().__init__(images, labels=meta["labels"], classes=meta["classes"], name=meta["name"], captions=captions,
                         window=window, channel_kind=meta.get("channel_kind"))
        self.bad_files = list(bad_files)
        self._fingerprint = meta["fingerprint"]  # ArraySource would hash every cached byte

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "images"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.images = np.memmap(self.path, dtype=self.meta.get("dtype", "uint8"), mode="r",
                                shape=tuple(self.meta["shape"]))

    def __repr__(self) -> str:
        return f"CachedSource({self.name!r}, {tuple(self.images.shape)}, {self.path})"


def _read_meta(json_path: Path, u8_path: Path, fingerprint: str) -> dict | None:
    """The cache's metadata when a complete cache of this fingerprint is there, else None."""
    try:
        meta = json.loads(json_path.read_text())
        complete = u8_path.stat().st_size == int(np.prod(meta["shape"])) * np.dtype(meta.get("dtype", "uint8")).itemsize
    except (OSError, ValueError, KeyError, TypeError):
        return None
    current = meta.get("fingerprint") == fingerprint and meta.get("version") == CACHE_VERSION
    return meta if complete and current else None


def _decode_into(path: Path, source: FolderSource, size: int) -> dict[int, str]:
    """Decode every image of ``source`` into a new memmap file at ``path``, rows in source order with the
    rows of failed images removed; returns {index: reason} of the failed ones. The file is closed on return."""
    n = len(source)
    dtype = _cache_dtype(source)
    images = np.memmap(path, dtype=dtype, mode="w+", shape=(n, source.channels, size, size))
    failed: dict[int, str] = {}

    def fill(chunk: range) -> None:  # PIL and torch release the GIL while decoding and resizing
        for i in chunk:
            try:
                square = fit_square(source.get_image(i), size)
                images[i] = quantize_unit(square) if dtype == np.uint16 else square.numpy()
            except DecodeError as error:
                failed[i] = str(error)

    with ThreadPoolExecutor(num_workers_for_io()) as pool:
        list(pool.map(fill, [range(a, min(n, a + _CHUNK)) for a in range(0, n, _CHUNK)]))
    keep = [i for i in range(n) if i not in failed]
    for row, i in enumerate(keep):  # close the gaps of failed files (rare: they passed the scan)
        if row != i:
            images[row] = images[i]
    images.flush()
    return failed


def _build(source: FolderSource, size: int, u8_path: Path, json_path: Path, fingerprint: str, log) -> dict:
    start = time.perf_counter()
    log(f"data.cache: decoding {len(source)} images of {source.root} to {size}x{size} into {u8_path} (once; "
        "later runs with the same files reuse it)")
    with atomic_path(u8_path) as tmp:  # an error or a kill leaves no partial .u8
        failed = _decode_into(tmp, source, size)
        keep = [i for i in range(len(source)) if i not in failed]
        if not keep:
            raise DataError(f"data.cache: none of the {len(source)} images of {source.root} could be decoded")
        shape = [len(keep), source.channels, size, size]
        if failed:
            os.truncate(tmp, int(np.prod(shape)) * _cache_dtype(source).itemsize)
            for i, reason in sorted(failed.items()):
                warnings.warn(f"data.cache: skipping {source.path(i)}: {reason}", stacklevel=3)
    labels = None if source.labels is None else source.labels[keep].tolist()
    meta = {"version": CACHE_VERSION, "fingerprint": fingerprint, "shape": shape,
            "dtype": str(_cache_dtype(source)), "channel_kind": getattr(source, "channel_kind", None),
            "root": os.path.abspath(source.root), "files": source.fingerprint(), "name": f"{source.name} (cached)",
            "labels": labels, "classes": source.classes,
            "build_bad_files": [[source.path(i), reason] for i, reason in sorted(failed.items())]}
    write_json_atomic(json_path, meta, indent=None)  # last: a .json means a complete .u8
    seconds = time.perf_counter() - start
    log(f"data.cache: {len(keep)} images cached in {seconds:.1f} s ({len(keep) / max(seconds, 1e-9):.0f} images/s)")
    return meta


def open_cached(source, image_size: int, cache_size: int | None, runs_dir: str | os.PathLike,
                log: Callable[[str], None] = print, build: bool = True, wait: Callable[[], None] = lambda: None):
    """``source`` as a :class:`CachedSource` when it is an image folder (built first when missing), else
    ``source`` itself. Under DDP, only the rank with ``build=True`` builds; ``wait`` (a barrier) runs between
    building and opening on every rank."""
    if not isinstance(source, FolderSource):
        log(f"data.cache: {source.name} is not an image folder; its images are read as they are")
        return source
    size = cache_size or default_cache_size(image_size)
    fingerprint = cache_fingerprint(source, size)
    folder = Path(runs_dir) / ".cache"
    u8_path, json_path = folder / f"{fingerprint}.u8", folder / f"{fingerprint}.json"
    meta = _read_meta(json_path, u8_path, fingerprint)
    if meta is None and build:
        folder.mkdir(parents=True, exist_ok=True)
        meta = _build(source, size, u8_path, json_path, fingerprint, log)
    elif meta is not None and build:
        log(f"data.cache: reusing {u8_path} ({meta['shape'][0]} images, {size}x{size})")
    wait()
    meta = meta or _read_meta(json_path, u8_path, fingerprint)
    if meta is None:
        raise DataError(f"data.cache: no complete cache at {u8_path} after the build (see the main rank's log)")
    captions = None
    if source.captions is not None:  # the rows of the images that failed while building are not in the cache
        failed = {path for path, _ in meta["build_bad_files"]}
        captions = source.captions.take(i for i in range(len(source)) if source.path(i) not in failed)
    return CachedSource(u8_path, meta, [*source.bad_files, *map(tuple, meta["build_bad_files"])], captions)
