"""Compact string storage for sources, and the captions of image-text sources (the field kind ``text``).

A source with captions holds one :class:`CaptionTable`: every sample's captions (one or several phrasings),
whitespace-normalised, in one UTF-8 buffer plus offsets, so that a million captions pickle into a DataLoader
worker as two numpy arrays instead of a million Python strings. :func:`has_text` says whether a source
carries them (its ``fields`` name the kind ``text``).

A leaf of the data package: it imports nothing of it, so every source module can use it.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from selfsup.fields import TEXT

# Captions of one sample are joined by this separator in the table; normalised captions never contain it.
_SEPARATOR = "\n"


class StringTable:
    """An immutable list of strings stored as one UTF-8 buffer plus offsets (cheap to pickle and to share)."""

    def __init__(self, strings: Iterable[str]):
        encoded = [s.encode("utf-8") for s in strings]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:
        return self._blob[self._offsets[index]:self._offsets[index + 1]].tobytes().decode("utf-8")

    def digest_parts(self) -> tuple[np.ndarray, np.ndarray]:
        return self._blob, self._offsets


def normalise_caption(text: str) -> str:
    """One caption with runs of whitespace (newlines and tabs too) collapsed to single spaces, trimmed."""
    return " ".join(text.split())


def normalise_captions(captions: str | Sequence[str]) -> list[str]:
    """A sample's captions (one string or several) normalised, empty ones dropped (may leave none)."""
    if isinstance(captions, str):
        captions = [captions]
    out = []
    for caption in captions:
        if not isinstance(caption, str):
            raise TypeError(f"a caption must be a string, not {type(caption).__name__} ({caption!r})")
        caption = normalise_caption(caption)
        if caption:
            out.append(caption)
    return out


class CaptionTable:
    """Each sample's captions, index-aligned with its images. ``empty`` lists the samples left without a
    caption after normalisation (sources refuse a table with any: every pair needs its text)."""

    def __init__(self, captions: Iterable[str | Sequence[str]]):
        per_sample = [normalise_captions(c) for c in captions]
        self.empty = [i for i, c in enumerate(per_sample) if not c]
        self._table = StringTable(_SEPARATOR.join(c) for c in per_sample)

    def __len__(self) -> int:
        return len(self._table)

    def __getitem__(self, index: int) -> list[str]:
        n = len(self._table)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} captioned images")
        joined = self._table[index % n]
        return joined.split(_SEPARATOR) if joined else []

    def take(self, indices: Iterable[int]) -> "CaptionTable":
        """The captions of ``indices``, in that order (a subset or a reordering)."""
        return CaptionTable(self[int(i)] for i in indices)

    def digest_parts(self) -> tuple[np.ndarray, np.ndarray]:
        return self._table.digest_parts()


def has_text(source) -> bool:
    """Whether ``source`` yields captions: one of its fields is of the kind ``text`` (then
    ``source.get_text(index)`` returns that sample's captions as a non-empty ``list[str]``)."""
    return TEXT.name in getattr(source, "fields", {}).values()
