"""Streamed tar shards (``data.source=shards/index.json``, or ``s3://bucket/shards/index.json`` and any other
fsspec URL): image shards too many or too remote to scan, read in shard order (:mod:`selfsup.data.stream_order`).

The index (``index.json``, written by ``selfsup data shard``; :func:`write_index`) names the shards (paths
relative to the index) and their sample counts, so nothing is read before training but the index; it may carry
the images' per-channel ``mean`` / ``std`` (the writer measures them), which then normalise the run. A sample
is a key of the webdataset layout (:mod:`selfsup.data.shards`): an image member (``.jpg``, ``.png``, ...),
optional ``.cls``, ``.txt``, ``.json``; its global index is its shard's offset plus its position among the
shard's keys that have an image.

Two readers, the same samples:

- local shards are read by random access: a scan of a shard's tar headers (no image is decoded), made by a
  worker the first time it reads from that shard and kept for the last few shards, gives each image member's
  offset, and is checked against the index's count (the first and last shards are checked at open); so memory
  does not grow with the number of images;
- URLs are streamed (fsspec, the ``stream`` extra): a worker keeps a cursor per open shard that reads forward,
  holding the samples read ahead of the one asked for (at most the shuffle buffer, plus after a resume in the
  middle of a shard the ones before the resume point); a sample behind the cursor reopens the shard.

Images are decoded when read, not at open: an undecodable one gives way to the next sample with a warning
(:class:`selfsup.views.dataset.ViewDataset`). Streamed shards are unlabelled image sources (labels None, no
test split): evaluate the backbone with ``selfsup eval RUN --data <labelled data>``.
"""
from __future__ import annotations

import json
import os
import posixpath
import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from selfsup.data.decode import DecodeError, decode_image
from selfsup.data.shards import IMAGE_MEMBER_EXTENSIONS, _key_and_extension, _read_member
from selfsup.data.sources import CaptionedSource, DataError, DataSplits, _hash
from selfsup.files import write_json_atomic

INDEX_FORMAT = "selfsup-shards"
INDEX_NAME = "index.json"
_OPEN_CURSORS = 2  # per process: the shard being read, and one more (a fallback sample, a stream's next shard)
_SCANNED_SHARDS = 8  # per process: member offsets of the local shards read last


def is_url(spec: str) -> bool:
    """A fsspec URL (``s3://``, ``gs://``, ``https://``, ``file://``, ...): read through fsspec, streamed."""
    return "://" in spec


def _fsspec():
    try:  # optional: only shards behind URLs need fsspec
        import fsspec
    except ImportError:
        raise DataError("reading shards from a URL needs fsspec (and the file system's package, e.g. s3fs); "
                        "install the stream extra: pip install 'selfsup[stream]'") from None
    return fsspec


def _join(base: str, name: str) -> str:
    return name if is_url(name) or os.path.isabs(name) else (posixpath.join(base, name) if is_url(base)
                                                             else os.path.join(base, name))


@dataclass
class ShardIndex:
    """What ``index.json`` says: shard names (relative to ``base``), their sample counts, and optional stats."""

    base: str
    names: list[str]
    counts: np.ndarray
    mean: list[float] | None = None
    std: list[float] | None = None
    channels: int = 3

    def urls(self) -> list[str]:
        return [_join(self.base, n) for n in self.names]


def write_index(folder: str | os.PathLike, names: list[str], counts: list[int], *, mean=None, std=None,
                channels: int = 3, extra: dict | None = None) -> Path:
    """Write ``folder/index.json`` for the shards ``names`` (relative to ``folder``) of ``counts`` samples."""
    path = Path(folder) / INDEX_NAME
    write_json_atomic(path, {"format": INDEX_FORMAT, "version": 1, "samples": int(sum(counts)), "channels": channels,
                             "mean": mean, "std": std, **(extra or {}),
                             "shards": [{"name": n, "count": int(c)} for n, c in zip(names, counts)]})
    return path


def read_index(spec: str) -> ShardIndex:
    """Read an ``index.json`` (a local path or a URL; a folder means its ``index.json``)."""
    if not spec.endswith(".json"):
        spec = posixpath.join(spec, INDEX_NAME) if is_url(spec) else os.path.join(spec, INDEX_NAME)
    try:
        if is_url(spec):
            with _fsspec().open(spec, "rb") as f:
                data = json.loads(f.read())
        else:
            data = json.loads(Path(spec).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{spec}: cannot read the shard index: {e}; write one with `selfsup data shard SRC OUT`") \
            from None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT or not data.get("shards"):
        raise DataError(f"{spec}: not a shard index (format '{INDEX_FORMAT}' with a list of shards and counts); "
                        "`selfsup data shard SRC OUT` writes one")
    base = posixpath.dirname(spec) if is_url(spec) else os.path.dirname(os.path.abspath(spec))
    return ShardIndex(base, [s["name"] for s in data["shards"]], np.array([s["count"] for s in data["shards"]],
                      np.int64), data.get("mean"), data.get("std"), int(data.get("channels") or 3))


def iter_samples(fileobj) -> "iter[tuple[str, dict[str, bytes]]]":
    """(key, {extension: bytes}) of every key with an image, in tar order, from a stream (``r|``: no seeking)."""
    key, group = None, {}
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for member in tar:
            if not member.isfile() or posixpath.basename(member.name).startswith("."):
                continue
            k, extension = _key_and_extension(member.name)
            if k != key:
                if key is not None and any(e in group for e in IMAGE_MEMBER_EXTENSIONS):
                    yield key, group
                key, group = k, {}
            group[extension] = tar.extractfile(member).read()
    if key is not None and any(e in group for e in IMAGE_MEMBER_EXTENSIONS):
        yield key, group


def image_bytes(group: dict[str, bytes]) -> bytes:
    return next(group[e] for e in IMAGE_MEMBER_EXTENSIONS if e in group)


def scan_local(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and sizes of the image member of every key with an image (headers only, nothing decoded)."""
    offsets, sizes, seen = [], [], set()
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            if not member.isfile() or posixpath.basename(member.name).startswith("."):
                continue
            key, extension = _key_and_extension(member.name)
            if extension in IMAGE_MEMBER_EXTENSIONS and key not in seen:
                seen.add(key)
                offsets.append(member.offset_data)
                sizes.append(member.size)
    return np.array(offsets, np.int64), np.array(sizes, np.int64)


class _Cursor:
    """Reads one shard forward, keeping the samples read ahead of the one asked for."""

    def __init__(self, url: str):
        self.file = _fsspec().open(url, "rb").open()
        self.samples = iter_samples(self.file)
        self.position, self.ahead = 0, {}

    def get(self, position: int) -> bytes | None:
        """The image bytes at ``position``, or None when the cursor has passed it (reopen the shard)."""
        if position in self.ahead:
            return self.ahead.pop(position)
        while self.position <= position:
            _, group = next(self.samples)
            data, self.position = image_bytes(group), self.position + 1
            if self.position - 1 == position:
                return data
            self.ahead[self.position - 1] = data
        return None

    def close(self) -> None:
        self.file.close()


class StreamedShards(CaptionedSource):
    """Images in the shards of a :class:`ShardIndex`; local shards by random access, URLs through cursors."""

    def __init__(self, index: ShardIndex, channels: int = 3, name: str | None = None,
                 shard_stats: np.ndarray | None = None):
        self.index, self.channels = index, int(channels)
        self.counts, self.urls = index.counts, index.urls()
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.local = shard_stats is not None  # local shards: (size, mtime_ns) of each at open; random access
        self.shard_stats = shard_stats
        self._scanned: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.name = name or posixpath.basename(index.base.rstrip("/")) or "shards"
        self.labels = self.classes = None
        self.bad_files: list[tuple[str, str]] = []
        if index.mean is not None and index.std is not None:  # only when known: callers test hasattr(source, "mean")
            self.mean, self.std = list(index.mean), list(index.std)
        self._cursors: OrderedDict[int, _Cursor] = OrderedDict()
        self._fingerprint = None

    def __len__(self) -> int:
        return int(self.counts.sum())

    def __getstate__(self) -> dict:
        # Open files and scans stay in the process that made them.
        return {**self.__dict__, "_cursors": OrderedDict(), "_scanned": OrderedDict()}

    def locate(self, index: int) -> tuple[int, int]:
        """(shard, position in the shard) of global index ``index``."""
        shard = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return shard, int(index - self.offsets[shard])

    def members(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        """Offsets and sizes of a local shard's image members (scanned once, kept for the last few shards)."""
        if shard in self._scanned:
            self._scanned.move_to_end(shard)
            return self._scanned[shard]
        offsets, sizes = scan_local(self.urls[shard])
        if len(offsets) != self.counts[shard]:
            raise DataError(f"{self.urls[shard]}: the index says {self.counts[shard]} samples, the shard holds "
                            f"{len(offsets)}; write the index again (selfsup data shard) or restore the shard")
        self._scanned[shard] = offsets, sizes
        while len(self._scanned) > _SCANNED_SHARDS:
            self._scanned.popitem(last=False)
        return offsets, sizes

    def _read(self, shard: int, position: int) -> bytes:
        if self.local:
            offsets, sizes = self.members(shard)
            return _read_member(self.urls[shard], int(offsets[position]), int(sizes[position]))
        cursor = self._cursors.pop(shard, None)
        data = cursor.get(position) if cursor is not None else None
        if data is None:  # not open, or already past the sample: read the shard again from its start
            if cursor is not None:
                cursor.close()
            cursor = _Cursor(self.urls[shard])
            data = cursor.get(position)
        self._cursors[shard] = cursor
        while len(self._cursors) > _OPEN_CURSORS:
            self._cursors.popitem(last=False)[1].close()
        return data

    def get_image(self, index: int) -> torch.Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        shard, position = self.locate(index)
        try:
            return decode_image(self._read(shard, position), self.channels)
        except (OSError, tarfile.TarError, StopIteration) as e:
            error = DecodeError(f"cannot read sample {position} of the shard: {e}")
        except DecodeError as e:
            error = e
        error.path = f"{self.urls[shard]}#{position}"
        raise error

    def fingerprint(self) -> str:
        """Hash of the shard names and counts (and, local, their sizes and mtimes at open) and channels."""
        if self._fingerprint is None:
            where = () if self.shard_stats is None else (self.shard_stats,)
            self._fingerprint = _hash(b"stream", str(self.channels), "\n".join(self.index.names), self.counts, *where)
        return self._fingerprint

    def __repr__(self) -> str:
        return f"StreamedShards({self.index.base!r}, {len(self.counts)} shards, {len(self)} images)"


def open_stream(spec: str, channels: int | None = None) -> DataSplits:
    """Open the shards of an index (local or URL) as training data (:class:`StreamedShards`, no test split)."""
    index = read_index(spec)
    channels = channels or index.channels
    if is_url(index.base):
        return DataSplits(train=StreamedShards(index, channels))
    stats = []
    for url in index.urls():
        try:
            stat = os.stat(url)
        except OSError as e:
            raise DataError(f"{url}: shard of the index {spec} not found ({e.strerror}); restore it or write the "
                            "index again (selfsup data shard)") from None
        stats.append((stat.st_size, stat.st_mtime_ns))
    source = StreamedShards(index, channels, shard_stats=np.array(stats, np.int64))
    for shard in sorted({0, len(index.names) - 1}):  # a wrong index shows at start; the others when read
        try:
            source.members(shard)
        except (OSError, tarfile.TarError) as e:
            raise DataError(f"{source.urls[shard]}: cannot read the shard ({e}); rewrite it or the index") from None
    return DataSplits(train=source)


def is_streamed(source) -> bool:
    """Whether ``source`` is read in shard order (:mod:`selfsup.data.stream_order`) rather than permuted."""
    return isinstance(source, StreamedShards)
