"""``selfsup data shard SRC OUT --shard-size SIZE``: tar shards in the webdataset layout from an image folder or
a manifest, images kept encoded (their file's bytes), with ``OUT/index.json`` (:func:`selfsup.data.stream.write_index`).

Each sample is ``<key>.<ext>`` (the file's own bytes), ``<key>.cls`` (its class index, labelled data),
``<key>.txt`` (its captions, one per line, image-text data) and ``<key>.json`` (its source path and class
name); keys are ``000000000``, ``000000001``, ... in the written order, which is the source order shuffled
from ``seed`` (a shard then holds a random sample of the data, which streaming, reading a shard at a time,
needs; ``shuffle=False`` keeps the source order). A shard closes at ``SIZE`` samples (``1000``) or bytes
(``256MB``, ``1GiB``). Bad files are found by the source's scan (every file decoded once), skipped, and listed
in ``OUT/bad_files.txt``. A source with a test split (split folders, a manifest's split column) writes it to
``OUT/test/`` with its own index.
"""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfsup.data.badfiles import write_bad_files
from selfsup.data.sources import DataError, FolderSource
from selfsup.data.stats import channel_stats
from selfsup.data.stream import write_index

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20,
          "gib": 2**30, "tib": 2**40}


@dataclass(frozen=True)
class ShardSize:
    """When a shard is full: after ``samples`` samples, or once it holds ``bytes`` bytes."""

    samples: int | None = None
    bytes: int | None = None

    @classmethod
    def parse(cls, text: str) -> "ShardSize":
        """``"1000"`` (samples) or ``"256MB"`` / ``"1GiB"`` / ``"500kb"`` (bytes)."""
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
            raise DataError(f"--shard-size {text!r}: give a sample count (1000) or a size in bytes (256MB, 1GiB)")
        if unit == "":
            return cls(samples=int(float(match.group(1))))
        return cls(bytes=int(float(match.group(1)) * _UNITS[unit]))

    def full(self, samples: int, size: int) -> bool:
        return (self.samples is not None and samples >= self.samples) or (self.bytes is not None and size >= self.bytes)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # mtime 0: the same data gives the same shards
    tar.addfile(info, io.BytesIO(data))
    return 512 + (len(data) + 511) // 512 * 512


def write_shards(source: FolderSource, out: str | os.PathLike, size: ShardSize, seed: int = 0,
                 shuffle: bool = True, log=lambda message: None) -> dict:
    """Write ``source``'s images as shards under ``out``; returns what ``index.json`` says (plus the shard paths)."""
    if not isinstance(source, FolderSource) or source.raw:
        raise DataError(f"{source.name}: shards are written from image files (an image folder or a manifest), "
                        "kept encoded; arrays and raw domain files are not image files")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(source)) if shuffle else np.arange(len(source))
    names, counts, tar, samples, written = [], [], None, 0, 0
    for key, i in enumerate(order.tolist()):
        if tar is None:
            names.append(f"shard-{len(names):06d}.tar")
            tar, samples, written = tarfile.open(out / names[-1], "w", format=tarfile.USTAR_FORMAT), 0, 0
        stem, relpath = f"{key:09d}", source.relpath(i)
        extension = os.path.splitext(relpath)[1].lower().lstrip(".")
        written += _add(tar, f"{stem}.{extension}", Path(source.path(i)).read_bytes())
        meta = {"path": relpath}
        if source.labels is not None:
            written += _add(tar, f"{stem}.cls", str(int(source.labels[i])).encode())
            meta["class"] = source.classes[int(source.labels[i])]
        if source.captions is not None:
            written += _add(tar, f"{stem}.txt", "\n".join(source.get_text(i)).encode("utf-8"))
        written += _add(tar, f"{stem}.json", json.dumps(meta).encode("utf-8"))
        samples += 1
        if size.full(samples, written):
            tar.close()
            counts.append(samples)
            log(f"  {names[-1]}: {samples} samples")
            tar = None
    if tar is not None:
        tar.close()
        counts.append(samples)
    mean, std = channel_stats(source) if len(source) else (None, None)
    if source.bad_files:
        write_bad_files(source.bad_files, out / "bad_files.txt")
    extra = {"classes": source.classes, "captions": source.captions is not None, "bad_files": len(source.bad_files),
             "source": source.root}
    write_index(out, names, counts, mean=mean, std=std, channels=source.channels, extra=extra)
    return {"shards": [str(out / n) for n in names], "counts": counts, "samples": int(sum(counts)),
            "bad_files": list(source.bad_files), "index": str(out / "index.json")}
