"""Tables (the field kind ``table``): CSV and parquet files, per-column statistics and the encoding of a row.

A table file has a header and one row per sample. Every column but the label column is a feature: numeric when
every present value parses as a number, categorical otherwise. Missing values (empty, ``NA``, ``NaN``, ``?``,
``null``, ``None``) are allowed anywhere. The label column is ``data.label_column``; without it, a column named
``label``, ``target`` or ``class`` (a table without one is unlabelled).

The statistics (:class:`TableStats`) come from the training split only: per numeric column its mean and
standard deviation, per categorical column its categories (the training split's, sorted); a category the
training split never saw is encoded as missing. A row is encoded as a (2, F) float32 tensor: row 0 the
standardised numbers and the category indices, row 1 a 1 where the value is present (the layout of
:mod:`selfsup.views.table`). The encoder (:mod:`selfsup.backbones.table_transformer`) gets the column layout
from the source's ``encoder_options`` (``cardinalities``: 0 for a numeric column, the number of categories for
a categorical one), which the backbone's spec then keeps.

Ragged rows (a different number of fields than the header) and rows whose label is missing are skipped and
listed in ``bad_files`` as ``(file:line, reason)``.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from selfsup.data.badfiles import check_bad_fraction
from selfsup.data.sources import DataError, DataSplits, _hash
from selfsup.data.splits import stratified_holdout
from selfsup.fields import TABLE_FIELDS

TABLE_SUFFIXES = (".csv", ".parquet")
MISSING = frozenset({"", "na", "nan", "n/a", "?", "null", "none"})
LABEL_COLUMNS = ("label", "target", "class")


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_table_file(path: Path) -> tuple[list[str], list[list], list[tuple[str, str]]]:
    """(header, rows of raw values, bad rows) of a .csv or .parquet file."""
    if path.suffix.lower() == ".parquet":
        try:  # optional: only parquet tables need pyarrow
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{path}: reading a parquet table needs pyarrow; install the parquet extra "
                            "(pip install 'selfsup[parquet]'), or write the table as .csv") from None
        try:
            table = pq.read_table(path)
        except Exception as error:  # pyarrow's own ArrowInvalid, OSError, ...
            raise DataError(f"{path}: cannot read the parquet table: {error}") from None
        columns = table.column_names
        data = [table.column(name).to_pylist() for name in columns]
        return list(columns), [list(values) for values in zip(*data)], []
    bad, rows = [], []
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: the table is empty (no header line)")
        header = [name.strip() for name in header]
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                bad.append((f"{path}:{reader.line_num}", f"{len(row)} fields, the header has {len(header)}"))
                continue
            rows.append(row)
    return header, rows, bad


def choose_label_column(header: list[str], label_column: str | None, path) -> str | None:
    if label_column is not None:
        if label_column not in header:
            raise DataError(f"config key 'data.label_column': {path} has no column '{label_column}' (its columns: "
                            f"{', '.join(header)}); name one of them, or leave it unset for unlabelled data")
        return label_column
    return next((name for name in header if name.strip().lower() in LABEL_COLUMNS), None)


@dataclass(frozen=True)
class ColumnStats:
    name: str
    kind: str  # "numeric" or "categorical"
    missing_fraction: float
    mean: float = 0.0
    std: float = 1.0
    categories: tuple[str, ...] = ()

    def to_json(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "missing_fraction": round(self.missing_fraction, 4)}
        if self.kind == "numeric":
            return {**out, "mean": self.mean, "std": self.std}
        return {**out, "categories": len(self.categories), "first_categories": list(self.categories[:5])}


@dataclass(frozen=True)
class TableStats:
    """Per-column statistics of the training rows: how every split's rows are encoded."""

    columns: tuple[ColumnStats, ...]

    @classmethod
    def measure(cls, names: list[str], rows: list[list]) -> "TableStats":
        columns = []
        for j, name in enumerate(names):
            present = [row[j] for row in rows if not _is_missing(row[j])]
            missing = 1 - len(present) / max(1, len(rows))
            numbers = [_number(v) for v in present]
            if all(n is not None for n in numbers):
                values = np.array(numbers, dtype=np.float64)
                mean = float(values.mean()) if len(values) else 0.0
                std = float(values.std()) if len(values) > 1 else 1.0
                columns.append(ColumnStats(name, "numeric", missing, mean, std if std > 1e-12 else 1.0))
            else:
                categories = tuple(sorted({str(v).strip() for v in present}))
                columns.append(ColumnStats(name, "categorical", missing, categories=categories))
        return cls(tuple(columns))

    @property
    def cardinalities(self) -> list[int]:
        """0 for a numeric column, the number of categories of a categorical one (the encoder's layout)."""
        return [len(c.categories) if c.kind == "categorical" else 0 for c in self.columns]

    def encode(self, rows: list[list]) -> np.ndarray:
        """(N, 2, F) float32: encoded values and presence."""
        out = np.zeros((len(rows), 2, len(self.columns)), dtype=np.float32)
        lookups = [{c: i for i, c in enumerate(col.categories)} for col in self.columns]
        for i, row in enumerate(rows):
            for j, (col, value) in enumerate(zip(self.columns, row)):
                if _is_missing(value):
                    continue
                if col.kind == "numeric":
                    number = _number(value)
                    if number is None:  # text in a numeric column of the test split: missing
                        continue
                    out[i, 0, j] = (number - col.mean) / col.std
                else:
                    index = lookups[j].get(str(value).strip())
                    if index is None:  # a category the training rows never had: missing
                        continue
                    out[i, 0, j] = index
                out[i, 1, j] = 1.0
        return out

    def to_json(self) -> list[dict]:
        return [c.to_json() for c in self.columns]


class TableSource:
    """Encoded rows (N, 2, F) with optional labels: the ``table`` field kind's source (picklable, in memory)."""

    fields = TABLE_FIELDS
    channels = 1
    mean, std = (0.0,), (1.0,)  # the rows are standardised already: the run's normalisation is the identity
    flips_preserve_labels = True
    channel_kind = "bands"

    def __init__(self, rows: np.ndarray, table_stats: TableStats, labels: np.ndarray | None = None,
                 classes: list[str] | None = None, name: str = "table", bad_files=None):
        self.rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.table_stats, self.labels, self.classes, self.name = table_stats, labels, classes, name
        self.bad_files = list(bad_files or [])

    @property
    def encoder_options(self) -> dict:
        return {"cardinalities": self.table_stats.cardinalities}

    def __len__(self) -> int:
        return len(self.rows)

    def get_image(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.rows[index])

    def take(self, indices: np.ndarray, name: str) -> "TableSource":
        labels = None if self.labels is None else self.labels[indices]
        return TableSource(self.rows[indices], self.table_stats, labels, self.classes, name)

    def fingerprint(self) -> str:
        labels = self.labels if self.labels is not None else np.zeros(0, dtype=np.int64)
        return _hash("table", self.rows, labels)

    def __repr__(self) -> str:
        return f"TableSource({self.name!r}, {len(self)} rows x {self.rows.shape[-1]} features)"


def _labels(values: list) -> tuple[np.ndarray, list[str]]:
    names = [str(v).strip() for v in values]
    numbers = [_number(n) for n in names]
    if all(n is not None and float(n).is_integer() for n in numbers):  # class numbers: keep their order
        classes = sorted({int(n) for n in numbers})
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[int(n)] for n in numbers], dtype=np.int64), [str(c) for c in classes]
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[n] for n in names], dtype=np.int64), classes


def table_splits(names: list[str], rows: list[list], labels: list | None, *, name: str, seed: int = 0,
                 holdout_fraction: float = 0.2, test_rows: list[list] | None = None,
                 test_labels: list | None = None, bad_files=()) -> DataSplits:
    """Train and held-out sources of raw rows: statistics measured on the training rows only."""
    label_ids, classes = (None, None)
    if labels is not None:
        label_ids, classes = _labels(list(labels) + list(test_labels or []))
    if test_rows is None:  # unlabelled rows all train: there is nothing to evaluate on a held-out split
        keep, held = stratified_holdout(label_ids, holdout_fraction, seed) if label_ids is not None else \
            (np.arange(len(rows)), np.zeros(0, dtype=np.int64))
        test_rows = [rows[i] for i in held]
        rows = [rows[i] for i in keep]
        train_ids, test_ids = (None, None) if label_ids is None else (label_ids[keep], label_ids[held])
    else:
        n = len(rows)
        train_ids, test_ids = (None, None) if label_ids is None else (label_ids[:n], label_ids[n:])
    stats = TableStats.measure(names, rows)
    train = TableSource(stats.encode(rows), stats, train_ids, classes, f"{name}/train", bad_files)
    test = TableSource(stats.encode(test_rows), stats, test_ids, classes, f"{name}/test") \
        if label_ids is not None and len(test_rows) else None
    return DataSplits(train=train, test=test)


def open_table(path: str | os.PathLike, label_column: str | None = None, seed: int = 0,
               holdout_fraction: float = 0.2, max_bad_fraction: float = 0.1, log=lambda message: None) -> DataSplits:
    """A .csv or .parquet table as train and held-out :class:`TableSource` splits (stratified when labelled)."""
    path = Path(path)
    header, rows, bad = read_table_file(path)
    label = choose_label_column(header, label_column, path)
    labels = None
    if label is not None:
        j = header.index(label)
        kept = []
        for number, row in enumerate(rows, 2):
            if _is_missing(row[j]):
                bad.append((f"{path}, row {number}", f"no value in the label column '{label}'"))
            else:
                kept.append(row)
        rows = kept
        labels = [row[j] for row in rows]
        rows = [row[:j] + row[j + 1:] for row in rows]
        header = header[:j] + header[j + 1:]
    check_bad_fraction(bad, len(rows) + len(bad), f"in {path}", max_bad_fraction, entry="row",
                       problem="could not be read")
    if not header:
        raise DataError(f"{path}: no feature columns besides the label column '{label}'")
    if bad:
        log(f"{path}: skipped {len(bad)} bad row(s), e.g. {bad[0][0]}: {bad[0][1]}")
    log(f"{path}: {len(rows)} rows, {len(header)} feature columns"
        + (f", labels from column '{label}'" if label else ", no label column (unlabelled)"))
    return table_splits(header, rows, labels, name=path.stem, seed=seed, holdout_fraction=holdout_fraction,
                        bad_files=bad)


def is_table_file(path: Path) -> bool:
    """A .csv / .parquet file that is a table rather than an image-text manifest (no image column)."""
    from_manifest = {"image", "filepath", "file_name", "path"}  # selfsup.data.captions.IMAGE_COLUMNS
    if path.suffix.lower() not in TABLE_SUFFIXES:
        return False
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq  # optional: only parquet files need it
            names = pq.read_schema(path).names
        except Exception:  # unreadable here: the manifest reader reports it
            return False
    else:
        with open(path, newline="", encoding="utf-8-sig") as file:
            names = next(csv.reader(file), [])
    return bool(names) and not ({n.strip().lower() for n in names} & from_manifest)


__all__ = ["ColumnStats", "TABLE_SUFFIXES", "TableSource", "TableStats", "is_table_file", "open_table",
           "read_table_file", "table_splits"]
