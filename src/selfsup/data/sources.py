"""Image sources: a uniform, picklable view of "N images, maybe with labels".

Two implementations:

- :class:`FolderSource`: image files under a root folder; keeps only the relative paths (packed in two numpy
  buffers, so that a million paths pickle into a DataLoader worker in milliseconds) and decodes on demand.
- :class:`ArraySource`: a ``uint8`` array ``(N, C, H, W)`` in memory (``.npz`` files, the embedded sets).

Both follow the :class:`ImageSource` protocol that views, engine and evaluation code rely on. Given
``captions`` (index-aligned, one or several per image), either is an image-text source: ``fields`` is
:data:`selfsup.fields.IMAGE_TEXT_FIELDS` and ``get_text(index)`` returns the sample's captions
(:func:`selfsup.data.text.has_text` tells). Other sources (tar shards, :mod:`selfsup.data.shards`) follow the
same protocol and take their own subsets (``take``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from selfsup.data.decode import DecodeError, decode_image
from selfsup.data.pixels import PixelWindow, default_channel_kind
from selfsup.data.readers import read_raw
from selfsup.data.text import CaptionTable, StringTable
from selfsup.fields import IMAGE_FIELDS, IMAGE_TEXT_FIELDS
from selfsup.registry import Registry

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class DataError(ValueError):
    """The data as a whole cannot be used; the message names the path or key and says what to do."""


# Embedded named datasets: name -> callable(channels=...) -> DataSplits (their own fixed train/test splits),
# registered where each is defined (selfsup.data.digits); ``data.source=<name>``.
DATASETS: Registry[Callable[..., "DataSplits"]] = Registry("dataset", key="data.source", error=DataError)


@runtime_checkable
class ImageSource(Protocol):
    """A source of the field kinds ``image`` and ``label`` (:mod:`selfsup.fields`), and ``text`` when it has
    captions (then also ``get_text(index) -> list[str]``); ``fields`` says so."""

    fields: dict[str, str]  # field name -> field kind: selfsup.fields.IMAGE_FIELDS or IMAGE_TEXT_FIELDS
    name: str
    channels: int
    labels: np.ndarray | None  # int64 (N,), or None when unlabeled
    classes: list[str] | None  # index-aligned with labels
    bad_files: list[tuple[str, str]]  # (path, reason) skipped at scan time

    def __len__(self) -> int: ...

    def get_image(self, index: int) -> torch.Tensor: ...

    def fingerprint(self) -> str: ...


@dataclass
class DataSplits:
    """``train``: images for pre-training (when labelled, also the kNN memory bank / linear-probe train set).
    ``test``: labelled held-out split for evaluation; for unlabelled image-text data, held-out pairs (labels
    None) for image-text retrieval; ``None`` when there is neither."""

    train: ImageSource
    test: ImageSource | None = None


def num_workers_for_io() -> int:
    """Threads for decoding files (PIL releases the GIL while decoding)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 2
    return max(2, min(16, 2 * cpus))


def _hash(*parts: bytes | str | np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        if isinstance(part, np.ndarray):
            part = np.ascontiguousarray(part)
            h.update(f"{part.dtype.str}{part.shape}".encode())
            h.update(memoryview(part).cast("B"))
        elif isinstance(part, str):
            h.update(part.encode("utf-8"))
        else:
            h.update(part)
        h.update(b"\x00")
    return h.hexdigest()


def _check_labels(labels: np.ndarray | None, classes: Sequence[str] | None, n: int, what: str):
    if labels is None:
        return None, None
    labels = np.array(labels, dtype=np.int64).reshape(-1)  # a private, writable copy
    if len(labels) != n:
        raise DataError(f"{what}: {len(labels)} labels for {n} images")
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1 if n else 0)]
    classes = [str(c) for c in classes]
    if n and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(f"{what}: labels must lie in 0..{len(classes) - 1} (one per class name)")
    return labels, classes


class CaptionedSource:
    """Base of the sources that may carry captions (the field kind ``text``): ``fields``, ``captions`` (a
    :class:`CaptionTable` or None) and ``get_text`` follow them. Also where raw (domain) sources keep their
    pixel window (:mod:`selfsup.data.pixels`): ``window`` None means 8-bit pictures, decoded as uint8."""

    fields = IMAGE_FIELDS
    captions: CaptionTable | None = None
    name: str
    window: PixelWindow | None = None
    channel_kind: str = "rgb"
    _fingerprint: str | None = None

    def set_window(self, window: PixelWindow, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> None:
        """Window raw pixels by ``window`` from now on, normalised by ``mean``/``std`` (of the windowed data)."""
        if window.channels != self.channels:
            raise DataError(f"{self.name}: a pixel window of {window.channels} bands for {self.channels}-band images")
        self.window = window
        if mean is not None and std is not None:
            self.mean, self.std = [float(m) for m in mean], [float(v) for v in std]
        self._fingerprint = None

    def _window_digest(self) -> tuple:
        return () if self.window is None else (b"window", self.window.digest())

    def _attach_captions(self, captions: Sequence[str | Sequence[str]] | CaptionTable | None, n: int,
                         what: str) -> None:
        if captions is None:
            return
        table = captions if isinstance(captions, CaptionTable) else CaptionTable(captions)
        if len(table) != n:
            raise DataError(f"{what}: {len(table)} caption entries for {n} images (one entry per image)")
        if table.empty:
            raise DataError(f"{what}: {len(table.empty)} image(s) without a non-empty caption (the first: index "
                            f"{table.empty[0]}); every image of an image-text source needs one")
        self.captions = table
        self.fields = IMAGE_TEXT_FIELDS  # an instance attribute: the class's default stays IMAGE_FIELDS

    def get_text(self, index: int) -> list[str]:
        """The captions of sample ``index`` (whitespace-normalised, each non-empty, at least one)."""
        if self.captions is None:
            raise DataError(f"{self.name}: this source has no captions (fields {self.fields}); give captions, a "
                            "caption manifest, .txt sidecars or tar shards (has_text(source) tells)")
        return self.captions[index]

    def _caption_digest(self) -> tuple:
        """What the captions add to a fingerprint: nothing without them (old fingerprints stay valid)."""
        return () if self.captions is None else (b"captions", *self.captions.digest_parts())


class FolderSource(CaptionedSource):
    """Image files under ``root`` (paths relative to it), decoded on demand by :func:`decode_image`.

    Built by :func:`selfsup.data.open_data` after a scan that decoded every file once; ``sizes`` and
    ``mtimes_ns`` are the files' ``stat`` at scan time and enter :meth:`fingerprint`. ``ignored_files`` counts
    the files under the split that were skipped because of their extension.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        paths: Sequence[str],
        *,
        channels: int = 3,
        labels: np.ndarray | None = None,
        classes: Sequence[str] | None = None,
        sizes: Sequence[int] | None = None,
        mtimes_ns: Sequence[int] | None = None,
        bad_files: list[tuple[str, str]] | None = None,
        ignored_files: int = 0,
        name: str | None = None,
        captions: Sequence[str | Sequence[str]] | CaptionTable | None = None,
        raw: bool = False,
        window: PixelWindow | None = None,
        channel_kind: str | None = None,
    ):
        self.root = str(root)
        self.raw = bool(raw)
        self._paths = StringTable(paths)
        n = len(self._paths)
        self.channels = int(channels)
        self.labels, self.classes = _check_labels(labels, classes, n, f"folder {self.root}")
        if sizes is None or mtimes_ns is None:
            stats = [os.stat(os.path.join(self.root, p)) for p in paths]
            sizes, mtimes_ns = [s.st_size for s in stats], [s.st_mtime_ns for s in stats]
        self._sizes = np.asarray(sizes, dtype=np.int64).reshape(n)
        self._mtimes = np.asarray(mtimes_ns, dtype=np.int64).reshape(n)
        self.bad_files = list(bad_files or [])
        self.ignored_files = int(ignored_files)
        self.name = name or os.path.basename(os.path.normpath(self.root))
        self._attach_captions(captions, n, f"folder {self.root}")
        self.window = window
        self.channel_kind = channel_kind or default_channel_kind(self.channels, self.raw)
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self._paths)

    def relpath(self, index: int) -> str:
        return self._paths[index]

    def path(self, index: int) -> str:
        return os.path.join(self.root, self._paths[index])

    def get_image(self, index: int) -> torch.Tensor:
        """Decode image ``index``; raises :class:`DecodeError` (with ``.path`` set) if it went bad after the scan."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        if self.raw:
            array = self.get_raw(index)
            window = self.window or PixelWindow.full_range(array.dtype, self.channels)
            return window.apply(array)
        path = self.path(index % len(self))
        try:
            return decode_image(path, self.channels)
        except DecodeError as e:
            e.path = path
            raise

    def get_raw(self, index: int) -> np.ndarray:
        """Raw folders: image ``index`` as its file holds it, (C, H, W) in its own dtype (:mod:`selfsup.data.readers`)."""
        if not self.raw:
            return decode_image(self.path(index % len(self)), self.channels).numpy()
        path = self.path(index % len(self))
        try:
            array = read_raw(path)
        except DecodeError as e:
            e.path = path
            raise
        if array.shape[0] != self.channels:
            error = DecodeError(f"{array.shape[0]} bands where the folder's images have {self.channels} (the file "
                                "changed after the scan?)")
            error.path = path
            raise error
        return array

    def fingerprint(self) -> str:
        """Hash of the relative paths, sizes and mtimes seen at scan time, labels, channels and captions."""
        if self._fingerprint is None:
            blob, offsets = self._paths.digest_parts()
            labels = self.labels if self.labels is not None else np.zeros(0, np.int64)
            self._fingerprint = _hash(
                b"folder", str(self.channels), blob, offsets, self._sizes, self._mtimes, labels,
                "\n".join(self.classes or []), *self._caption_digest(), *((b"raw",) if self.raw else ()),
                *self._window_digest(),
            )
        return self._fingerprint

    def __repr__(self) -> str:
        labelled = f", {len(self.classes)} classes" if self.classes is not None else ", unlabeled"
        return f"FolderSource({self.root!r}, {len(self)} images, channels={self.channels}{labelled})"


class ArraySource(CaptionedSource):
    """Images in an array ``(N, C, H, W)``: ``uint8`` pictures (``get_image`` converts C=3 -> 1 (luminance) or
    1 -> 3), or raw data of any numeric dtype (uint16, int16, float32, ...) that ``get_image`` maps to float
    [0, 1] through ``window`` (default: the dtype's full range; [0, 1] for floats; :mod:`selfsup.data.pixels`).

    ``mean``/``std``: optional per-channel statistics in [0, 1] units (of the *train* split) for
    normalization. The attributes exist only when given (code tests ``hasattr(source, "mean")``);
    :func:`channel_stats` returns them when present.
    """

    # The array's layout; a subclass holds other field kinds (selfsup.data.volumes: (N, C, D, H, W) volumes).
    array_ndim, array_layout = 4, "(N, C, H, W)"

    def __init__(
        self,
        images: np.ndarray,
        *,
        channels: int | None = None,
        labels: np.ndarray | None = None,
        classes: Sequence[str] | None = None,
        name: str = "arrays",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        captions: Sequence[str | Sequence[str]] | CaptionTable | None = None,
        window: PixelWindow | None = None,
        channel_kind: str | None = None,
    ):
        images = np.asarray(images)
        if images.ndim != self.array_ndim or images.dtype.kind not in "uif":
            raise DataError(f"{name}: {type(self).__name__} needs a numeric array {self.array_layout}, got "
                            f"{images.dtype} {images.shape}")
        self.images = images
        stored = images.shape[1]
        self.raw = images.dtype != np.uint8 or window is not None
        if self.raw and window is None:
            window = PixelWindow.full_range(images.dtype, stored)
        self.window = window
        self.channels = int(stored if channels is None else channels)
        if self.raw and self.channels != stored:
            raise DataError(f"{name}: raw images have {stored} bands; channels (data.channels) must be {stored} "
                            "(or unset)")
        if self.channels != stored and {self.channels, stored} != {1, 3}:
            raise DataError(
                f"{name}: images have {stored} channels, cannot provide {self.channels} "
                "(only 1 <-> 3 conversion is possible); set channels (data.channels) to "
                f"{stored}"
            )
        self.labels, self.classes = _check_labels(labels, classes, len(images), name)
        self.bad_files: list[tuple[str, str]] = []
        self.name = name
        if mean is not None and std is not None:  # only when known: callers test hasattr(source, "mean")
            self.mean = [float(m) for m in mean]
            self.std = [float(s) for s in std]
        self._attach_captions(captions, len(images), name)
        self.channel_kind = channel_kind or default_channel_kind(self.channels, self.raw)
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.images)

    def get_raw(self, index: int) -> np.ndarray:
        return np.asarray(self.images[index])

    def get_image(self, index: int) -> torch.Tensor:
        if self.raw:
            return self.window.apply(np.asarray(self.images[index]))
        image = self.images[index]
        stored = image.shape[0]
        if self.channels == 1 and stored == 3:
            gray = np.tensordot(_LUMA, image.astype(np.float32), axes=(0, 0))
            image = np.clip(np.rint(gray), 0, 255).astype(np.uint8)[None]
        elif self.channels == 3 and stored == 1:
            image = np.repeat(image, 3, axis=0)
        return torch.from_numpy(np.array(image, copy=True))

    def fingerprint(self) -> str:
        """Hash of the array bytes, labels, channels and captions."""
        if self._fingerprint is None:
            labels = self.labels if self.labels is not None else np.zeros(0, np.int64)
            self._fingerprint = _hash(
                b"array", str(self.channels), self.images, labels, "\n".join(self.classes or []),
                *self._caption_digest(), *self._window_digest(),
            )
        return self._fingerprint

    def __repr__(self) -> str:
        labelled = f", {len(self.classes)} classes" if self.classes is not None else ", unlabeled"
        return f"ArraySource({self.name!r}, {tuple(self.images.shape)}, channels={self.channels}{labelled})"
