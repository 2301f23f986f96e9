"""Tar shards of images, or image-text pairs, in the webdataset / open_clip layout (``data.source=/path/shards/``
or a single ``.tar``), read by random access without the webdataset package. Streamed shards (URLs, an
``index.json``) are :mod:`selfsup.data.stream`'s.

A shard is a plain (uncompressed) ``.tar``; its members are grouped by key, the member name up to the first
dot of its basename (``a/0001.jpg`` and ``a/0001.txt`` are key ``a/0001``): ``<key>.jpg|jpeg|png|webp|...``
is the image, ``<key>.txt`` its captions (one per line; shards without any ``.txt`` are plain image shards),
an optional ``<key>.cls`` its integer label; ``<key>.json`` (metadata) and other members are ignored. A folder's shards are its ``*.tar`` files (not recursive).

The scan reads every tar header once (with the stdlib ``tarfile``), keeps each image member's shard, data
offset and size in numpy arrays (cheap to pickle into DataLoader workers), reads the captions and labels,
and decodes every image once, so that bad members are found now: a key without an image, without a caption
(missing or empty ``.txt``, in shards that have captions), with a ``.cls`` that is not an integer or missing while other keys have one, or
with an undecodable image is skipped and listed in ``bad_files`` as ``("<shard>:<member>", reason)``, under
the bad-file policy (``data.max_bad_fraction``). ``get_image(i)`` seeks to the member and decodes its bytes;
a :class:`DecodeError` then names ``"<shard>:<member>"`` in its ``path``.

Order: samples are sorted by their image member's name (then by shard), the order a caption manifest or a
caption folder with the same relative paths gives. There are no split shards: labelled shards get a
stratified held-out test split, unlabelled ones a random held-out fraction of pairs (labels None).
"""
from __future__ import annotations

import logging
import os
import posixpath
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from selfsup.data.badfiles import check_bad_fraction
from selfsup.data.captions import INTEGER_LABEL, class_indices
from selfsup.data.decode import DecodeError, check_image, decode_image
from selfsup.data.folder import IMAGE_EXTENSIONS
from selfsup.data.sources import (
    CaptionedSource,
    DataError,
    DataSplits,
    _check_labels,
    _hash,
    num_workers_for_io,
)
from selfsup.data.splits import holdout_split
from selfsup.data.text import CaptionTable, StringTable, normalise_captions

log = logging.getLogger(__name__)

SHARD_SUFFIX = ".tar"
IMAGE_MEMBER_EXTENSIONS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)


def shard_paths(path: str | os.PathLike) -> list[Path]:
    """The shards of ``path``: itself when it is a ``.tar`` file, else the ``*.tar`` files in the folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir()
                  if p.is_file() and p.suffix.lower() == SHARD_SUFFIX and not p.name.startswith("."))


def _key_and_extension(name: str) -> tuple[str, str]:
    """``a/0001.seg.jpg`` -> (``a/0001``, ``seg.jpg``): the key ends at the first dot of the basename."""
    folder, base = posixpath.split(name)
    stem, _, extension = base.partition(".")
    return posixpath.join(folder, stem), extension.lower()


@dataclass
class _Group:
    """The members of one key of one shard."""

    image: tarfile.TarInfo | None = None
    texts: dict[str, bytes] = field(default_factory=dict)  # "txt" / "cls" -> contents


def _read_groups(shard: Path) -> tuple[dict[str, _Group], str | None]:
    """Every key of a shard with its members; the reason when the tar could not be read (to its end)."""
    groups: dict[str, _Group] = {}
    try:
        with tarfile.open(shard, mode="r:") as tar:  # "r:": plain tar, the only kind that allows random access
            for member in tar:
                if not member.isfile() or posixpath.basename(member.name).startswith("."):
                    continue
                key, extension = _key_and_extension(member.name)
                group = groups.setdefault(key, _Group())
                if extension in IMAGE_MEMBER_EXTENSIONS and group.image is None:
                    group.image = member
                elif extension in ("txt", "cls"):
                    group.texts[extension] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        return groups, f"cannot read the tar (plain, uncompressed .tar needed) after {len(groups)} keys: {e}"
    return groups, None


def _read_member(shard: str, offset: int, size: int) -> bytes:
    with open(shard, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise DecodeError(f"truncated member ({len(data)} of {size} bytes; the shard changed after the scan?)")
    return data


class ShardSource(CaptionedSource):
    """Images or image-text pairs in tar shards (see the module docstring): an index of image members (shard, offset,
    size, name) with their captions and labels; images are read and decoded on demand."""

    def __init__(self, root: str | os.PathLike, shards: Sequence[str], shard_stats: np.ndarray,
                 shard_of: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, members: Sequence[str] | StringTable,
                 captions: Sequence[Sequence[str]] | CaptionTable | None, *, channels: int = 3,
                 labels: np.ndarray | None = None, classes: Sequence[str] | None = None,
                 bad_files: list[tuple[str, str]] | None = None, name: str | None = None):
        self.root = str(root)
        self.shards = [str(s) for s in shards]  # relative to root
        self._shard_stats = np.asarray(shard_stats, np.int64).reshape(len(self.shards), 2)  # (size, mtime_ns)
        self._shard_of = np.asarray(shard_of, np.int32)
        self._offsets, self._sizes = np.asarray(offsets, np.int64), np.asarray(sizes, np.int64)
        self._members = members if isinstance(members, StringTable) else StringTable(members)
        n = len(self._members)
        if not len(self._shard_of) == len(self._offsets) == len(self._sizes) == n:
            raise DataError(f"{self.root}: the shard index arrays disagree in length")
        self.channels = int(channels)
        self.name = name or os.path.basename(os.path.normpath(self.root))
        self.labels, self.classes = _check_labels(labels, classes, n, f"shards {self.root}")
        self.bad_files = list(bad_files or [])
        self._attach_captions(captions, n, f"shards {self.root}")
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self._members)

    def member(self, index: int) -> str:
        """``<shard path>:<member name>`` of sample ``index`` (how bad files and decode errors name it)."""
        return f"{os.path.join(self.root, self.shards[self._shard_of[index]])}:{self._members[index]}"

    def get_image(self, index: int) -> torch.Tensor:
        """Decode sample ``index``'s image; raises :class:`DecodeError` with ``.path`` ``<shard>:<member>``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        try:
            shard = os.path.join(self.root, self.shards[self._shard_of[index]])
            return decode_image(_read_member(shard, int(self._offsets[index]), int(self._sizes[index])), self.channels)
        except OSError as e:
            error = DecodeError(f"cannot read the shard: {e.strerror or e}")
        except DecodeError as e:
            error = e
        error.path = self.member(index)
        raise error

    def take(self, indices: np.ndarray, name: str) -> "ShardSource":
        """The samples ``indices`` as a new source (what :func:`selfsup.data.sources.subset` calls)."""
        indices = np.asarray(indices, np.int64)
        return ShardSource(self.root, self.shards, self._shard_stats, self._shard_of[indices], self._offsets[indices],
                           self._sizes[indices], [self._members[int(i)] for i in indices],
                           None if self.captions is None else self.captions.take(indices),
                           channels=self.channels, labels=None if self.labels is None else self.labels[indices],
                           classes=self.classes, name=name)

    def fingerprint(self) -> str:
        """Hash of the shard names, sizes and mtimes at scan time, the member index, labels, channels, captions."""
        if self._fingerprint is None:
            labels = self.labels if self.labels is not None else np.zeros(0, np.int64)
            self._fingerprint = _hash(
                b"shards", str(self.channels), "\n".join(self.shards), self._shard_stats, self._shard_of,
                self._offsets, self._sizes, *self._members.digest_parts(), labels, "\n".join(self.classes or []),
                *self._caption_digest(),
            )
        return self._fingerprint

    def __repr__(self) -> str:
        labelled = f", {len(self.classes)} classes" if self.classes is not None else ", unlabeled"
        return f"ShardSource({self.root!r}, {len(self.shards)} shards, {len(self)} samples{labelled})"


@dataclass
class _Candidate:
    """A key with an image and a caption, before its image is decoded."""

    shard: int
    member: tarfile.TarInfo
    captions: list[str] | None  # None: shards without captions
    label: str | None


def _candidates(shards: list[Path]) -> tuple[list[_Candidate], list[tuple[str, str]]]:
    """Keys with an image (and captions, when the shards have them) from every shard, and the bad ones (no image,
    no caption, bad label)."""
    found: list[tuple[int, str, _Group]] = []
    bad: list[tuple[str, str]] = []
    for number, shard in enumerate(shards):
        groups, reason = _read_groups(shard)
        if reason is not None:
            bad.append((str(shard), reason))
        found += [(number, key, group) for key, group in groups.items()]
    labelled = any("cls" in group.texts for _, _, group in found)
    captioned = any("txt" in group.texts for _, _, group in found)
    candidates = []
    for number, key, group in found:
        where = f"{shards[number]}:{group.image.name if group.image is not None else key}"
        captions = normalise_captions(group.texts.get("txt", b"").decode("utf-8", "replace").splitlines()) \
            if captioned else None
        label = group.texts.get("cls", b"").decode("utf-8", "replace").strip() if labelled else None
        if group.image is None:
            bad.append((where, f"no image member ({', '.join(IMAGE_MEMBER_EXTENSIONS)}) for key {key}"))
        elif captioned and not captions:
            state = "missing" if "txt" not in group.texts else "empty"
            bad.append((where, f"no caption: {posixpath.basename(key)}.txt is {state}"))
        elif labelled and not INTEGER_LABEL.fullmatch(label):
            problem = "missing, while other keys have one" if "cls" not in group.texts else \
                f"not a non-negative integer: {label!r}"
            bad.append((where, f"label {posixpath.basename(key)}.cls is {problem}"))
        else:
            candidates.append(_Candidate(number, group.image, captions, label))
    return candidates, bad


def open_shards(path: str | os.PathLike, channels: int = 3, max_bad_fraction: float = 0.1, seed: int = 0,
                holdout_fraction: float = 0.2) -> DataSplits:
    """Open tar shards (a folder of ``.tar`` files, or one) as :class:`DataSplits` of :class:`ShardSource`."""
    path = Path(path)
    if channels not in (1, 3):
        raise DataError(f"{path}: image files give 1 (gray) or 3 (RGB) channels, not channels={channels}")
    shards = shard_paths(path)
    if not shards:
        raise DataError(f"no .tar shards in {path}")
    candidates, bad = _candidates(shards)
    if not candidates and not bad:
        raise DataError(f"the shards in {path} hold no members; each sample is <key>.jpg (or .png, .webp, ...), "
                        "optionally <key>.txt (captions) and <key>.cls (label)")
    candidates.sort(key=lambda c: (c.member.name, c.shard))  # the documented order: by image member name

    def check(candidate: _Candidate) -> str | None:
        try:
            check_image(_read_member(str(shards[candidate.shard]), candidate.member.offset_data,
                                     candidate.member.size), channels)
        except DecodeError as e:
            return str(e)
        except OSError as e:
            return f"cannot read the shard: {e.strerror or e}"
        return None

    with ThreadPoolExecutor(num_workers_for_io()) as pool:
        reasons = list(pool.map(check, candidates))
    bad += [(f"{shards[c.shard]}:{c.member.name}", r) for c, r in zip(candidates, reasons) if r is not None]
    good = [c for c, r in zip(candidates, reasons) if r is None]
    log.info("scanned %d shards under %s: %d samples, %d bad entries", len(shards), path, len(good), len(bad))
    check_bad_fraction(bad, len(good) + len(bad), f"in the shards {path}", max_bad_fraction, entry="shard item",
                       problem="could not be used")
    root = path if path.is_dir() else path.parent
    stats = [(s.stat().st_size, s.stat().st_mtime_ns) for s in shards]
    labels, classes = class_indices([c.label for c in good]) if good[0].label is not None else (None, None)
    source = ShardSource(
        root, [os.path.relpath(s, root) for s in shards], np.array(stats, np.int64),
        np.array([c.shard for c in good], np.int32), np.array([c.member.offset_data for c in good], np.int64),
        np.array([c.member.size for c in good], np.int64), [c.member.name for c in good],
        [c.captions for c in good] if good[0].captions is not None else None, channels=channels, labels=labels, classes=classes, bad_files=bad,
        name=path.name if path.is_dir() else path.stem,
    )
    return holdout_split(source, holdout_fraction, seed)
