"""Manifests: images, or image-text pairs, listed in a ``.csv``, ``.jsonl`` or ``.parquet`` file
(``data.source=/path/pairs.csv``). A manifest without a caption column is a plain image source (fields image
and label); with one, every sample needs a caption.

Columns (names matched case-insensitively; the first one present of each group is used):

- the image: ``image``, ``filepath``, ``file_name`` or ``path``: a path relative to the manifest's folder
  (an absolute path also works);
- optional caption: ``caption``, ``text`` or ``title``; in JSONL and parquet a list of strings is several
  captions (with the column present, a row without a caption is a bad row);
- optional ``label``: a class name or an integer (all non-negative integers: label i is class "i");
- optional ``split``: ``train``, ``test`` or ``val`` (``val`` is the test split, as for folders).

Several rows with the same image are one sample with several captions. Bad rows never stop the scan: a
missing, unreadable or undecodable image (each image is decoded once, as folders are), an empty caption, an
unknown split or a label that contradicts an earlier row of the same image is skipped and listed in
``bad_files`` as ``(image path or "<manifest>, line N", reason)``, under the bad-file policy
(``data.max_bad_fraction``) of :mod:`selfsup.data.badfiles`.

Splits: the split column when there is one; else a held-out test split (:func:`holdout_split`: stratified
when labelled, random pairs with labels None when not, for image-text retrieval).

Order: samples are sorted by their image path relative to the manifest's folder (posix, code point order),
the order a caption folder (:mod:`selfsup.data.folder`) and tar shards (:mod:`selfsup.data.shards`, by image
member name) give the same pairs.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from selfsup.data.badfiles import check_bad_fraction
from selfsup.data.folder import check_file
from selfsup.data.sources import DataError, DataSplits, FolderSource, num_workers_for_io
from selfsup.data.splits import holdout_split
from selfsup.data.text import normalise_captions

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")
IMAGE_COLUMNS = ("image", "filepath", "file_name", "path")
CAPTION_COLUMNS = ("caption", "text", "title")
SPLIT_NAMES = {"train": "train", "test": "test", "val": "test"}
INTEGER_LABEL = re.compile(r"\+?[0-9]+")  # (fullmatch) a class number; "-1" or "3.5" are class names

Row = tuple[str, dict | None, str | None]  # (where, record or None, reason when the row could not be read)


@dataclass
class _Sample:
    """One image of the manifest and what its rows said about it."""

    where: str  # the first row naming it
    captions: list[str] = field(default_factory=list)
    label: str | None = None
    split: str = "train"


def class_indices(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Labels as written (class names, or integers as text) -> (int64 indices, class names). All non-negative
    integers: label i is class ``"i"`` (classes ``"0"`` .. the largest); otherwise the sorted distinct names."""
    if values and all(INTEGER_LABEL.fullmatch(v) for v in values):
        ints = np.array([int(v) for v in values], np.int64)
        return ints, [str(i) for i in range(int(ints.max()) + 1)]
    classes = sorted(set(values))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in values], np.int64), classes


def _read_csv(path: Path) -> Iterator[Row]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.DictReader(f)
        try:
            for record in reader:
                yield f"{path}, line {reader.line_num}", record, None
        except csv.Error as e:  # a broken quote or NUL byte ends the file: report the place, keep what was read
            yield f"{path}, line {reader.line_num}", None, f"unreadable CSV from here on: {e}"


def _read_jsonl(path: Path) -> Iterator[Row]:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield where, None, f"not valid JSON: {e.msg}"
                continue
            yield (where, record, None) if isinstance(record, dict) else (where, None, "not a JSON object")


def _read_parquet(path: Path) -> Iterator[Row]:
    try:  # optional: only parquet manifests need pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading a parquet manifest needs pyarrow; install the parquet extra "
                        "(pip install 'selfsup[parquet]'), or write the manifest as .csv or .jsonl") from None
    try:
        records = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises its own ArrowInvalid, OSError, ... for a broken file
        raise DataError(f"{path}: cannot read the parquet manifest: {e}") from None
    for number, record in enumerate(records, 1):
        yield f"{path}, row {number}", record, None


_READERS = {".csv": _read_csv, ".jsonl": _read_jsonl, ".parquet": _read_parquet}


def _column(records: list[dict], names: tuple[str, ...]) -> str | None:
    """The key of ``records`` that is the first of ``names`` present (case-insensitively), or None."""
    keys = {}
    for record in records:
        for key in record:
            if isinstance(key, str):
                keys.setdefault(key.strip().lower(), key)
    return next((keys[n] for n in names if n in keys), None)


def _text(value) -> str:
    """A cell as text ('' when empty); numbers (a JSON label 3) become their digits."""
    if value is None or isinstance(value, float) and value != value:  # None, or NaN from a parquet null
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _captions_of(value) -> list[str] | None:
    """A caption cell -> its captions (None when it holds something other than text)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return normalise_captions(value) if all(isinstance(v, str) for v in value) else None
    return normalise_captions(value) if isinstance(value, str) else None


def _collect(rows: list[Row], path: Path) -> tuple[dict[str, _Sample], list[tuple[str, str]], bool, bool]:
    """Rows -> samples by image path, bad rows, whether the manifest is labelled and whether it has captions."""
    records = [record for _, record, _ in rows if record is not None]
    image_key, caption_key = _column(records, IMAGE_COLUMNS), _column(records, CAPTION_COLUMNS)
    label_key, split_key = _column(records, ("label",)), _column(records, ("split",))
    if image_key is None:
        found = sorted({str(k) for r in records for k in r})
        raise DataError(f"{path}: a manifest needs an image column ({', '.join(IMAGE_COLUMNS)}); its columns are "
                        f"{', '.join(found) or 'none'}. Columns: image, optional caption, label and split")
    captioned = caption_key is not None
    labelled = label_key is not None and any(_text(r.get(label_key)) for r in records)
    samples: dict[str, _Sample] = {}
    bad: list[tuple[str, str]] = []
    for where, record, reason in rows:
        if record is None:
            bad.append((where, reason))
            continue
        image = _text(record.get(image_key))
        captions = _captions_of(record.get(caption_key)) if captioned else []
        label = _text(record.get(label_key)) if labelled else None
        split = _text(record.get(split_key)).lower() if split_key is not None else "train"
        if not image:
            bad.append((where, f"no image path (column '{image_key}')"))
        elif captioned and captions is None:
            bad.append((where, f"the caption (column '{caption_key}') is not text"))
        elif captioned and not captions:
            bad.append((where, f"empty caption (column '{caption_key}')"))
        elif labelled and not label:
            bad.append((where, f"no label (column '{label_key}'), while other rows have one"))
        elif split not in SPLIT_NAMES:
            bad.append((where, f"split {split!r} is none of train, test, val (column '{split_key}')"))
        else:
            key = posixpath.normpath(image.replace(os.sep, "/"))
            sample = samples.setdefault(key, _Sample(where, label=label, split=SPLIT_NAMES[split]))
            if sample.label != label:
                bad.append((where, f"label {label!r} differs from {sample.label!r} given for {key} at {sample.where}"))
            elif sample.split != SPLIT_NAMES[split]:
                bad.append((where, f"split {split!r} differs from {sample.split!r} given for {key} at {sample.where}"))
            else:
                sample.captions += [c for c in captions if c not in sample.captions]
    return samples, bad, labelled, captioned


def open_manifest(path: str | os.PathLike, channels: int = 3, max_bad_fraction: float = 0.1, seed: int = 0,
                  holdout_fraction: float = 0.2) -> DataSplits:
    """Open a manifest (see the module docstring) as :class:`DataSplits` of :class:`FolderSource` (root: the
    manifest's folder), captioned when the manifest has a caption column."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: a manifest is a {', '.join(MANIFEST_SUFFIXES)} file")
    if channels not in (1, 3):
        raise DataError(f"{path}: image files give 1 (gray) or 3 (RGB) channels, not channels={channels}")
    try:
        rows = list(reader(path))
    except OSError as e:
        raise DataError(f"{path}: cannot read the manifest: {e.strerror or e}") from None
    if not rows:
        raise DataError(f"{path}: the manifest has no rows (columns: image, optional caption, label and split)")
    samples, bad, labelled, captioned = _collect(rows, path)
    root = path.parent
    keys = sorted(samples)  # the documented order: by image path
    with ThreadPoolExecutor(num_workers_for_io()) as pool:  # decode each image once, as folders do
        checks = list(pool.map(lambda key: check_file(os.path.join(root, key), channels), keys))
    bad += [(os.path.join(root, key), reason) for key, (reason, _, _) in zip(keys, checks) if reason is not None]
    log.info("scanned %s: %d images, %d bad entries", path, len(keys), len(bad))
    good = [(key, check) for key, check in zip(keys, checks) if check[0] is None]
    check_bad_fraction(bad, len(good) + len(bad), f"in {path}", max_bad_fraction, entry="manifest item",
                       problem="could not be used")
    labels, classes = class_indices([samples[k].label for k, _ in good]) if labelled else (None, None)
    split_names = any(samples[key].split == "test" for key, _ in good)  # names say "train" only beside "test"
    sources = {}
    for split in ("train", "test"):
        chosen = [i for i, (key, _) in enumerate(good) if samples[key].split == split]
        if not chosen:
            continue
        sources[split] = FolderSource(
            root, [good[i][0] for i in chosen], channels=channels,
            labels=None if labels is None else labels[chosen], classes=classes,
            sizes=[good[i][1][1] for i in chosen], mtimes_ns=[good[i][1][2] for i in chosen],
            bad_files=bad if split == "train" else [], name=f"{path.stem}/{split}" if split_names else path.stem,
            captions=[samples[good[i][0]].captions for i in chosen] if captioned else None,
        )
    if "train" not in sources:
        raise DataError(f"{path}: no usable rows of the train split (the split column names only test or val rows)")
    if "test" not in sources:
        return holdout_split(sources["train"], holdout_fraction, seed)
    return DataSplits(train=sources["train"], test=sources["test"])
