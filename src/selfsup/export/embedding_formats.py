"""Embeddings files: one row per image, its path (relative to the embedded folder) and its vector.

The suffix of the output file chooses the format (:data:`EMBEDDING_FORMATS`):

- ``.npy``: the ``(N, D)`` array (float32; float16 under ``precision="fp16"``). Row ``i``'s path is line ``i`` of
  ``<out>.paths.txt`` (UTF-8, one path per line): ``np.load(out)`` and ``open(out + ".paths.txt")``.
- ``.parquet`` (pyarrow, the ``parquet`` extra): columns ``path`` (string) and ``embedding`` (a fixed-size list of
  D floats), the one-vector-column layout that vector stores, Hugging Face ``datasets`` and LanceDB read:
  ``df = pandas.read_parquet(out)`` gives one array per row and ``np.stack(df.embedding)`` the matrix. The
  schema's metadata (key ``selfsup``) holds the backbone, input size and normalisation as JSON.
- ``.csv``: a header ``path,dim_0,...,dim_<D-1>``, then one line per image; floats with 9 significant digits, so
  float32 values read back exactly.

A writer streams the rows chunk by chunk into a file that the caller renames onto the output when it is complete
(:func:`selfsup.files.atomic_path`): memory holds one chunk, and an interrupted merge leaves no half file.
:func:`read_embeddings` reads any of them back as ``(paths, array)``.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from selfsup.registry import Registry

EMBEDDING_FORMATS: Registry[type] = Registry(
    "embeddings format", also="the suffix of --out chooses one: emb.npy, emb.parquet, emb.csv")
PATHS_SUFFIX = ".paths.txt"


def format_of(out: str | os.PathLike) -> type:
    """The writer class for ``out``'s suffix; an unknown suffix names the registered ones."""
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in EMBEDDING_FORMATS.names():
        raise ValueError(f"--out {out}: {EMBEDDING_FORMATS.unknown(suffix or '(no suffix)')}")
    return EMBEDDING_FORMATS.get(suffix)


def paths_file(out: str | os.PathLike) -> Path:
    """The row order of a ``.npy`` output: ``<out>.paths.txt``."""
    return Path(f"{out}{PATHS_SUFFIX}")


def _pyarrow():
    try:  # optional: only .parquet outputs need pyarrow
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("writing or reading a .parquet embeddings file needs pyarrow: pip install "
                         "'selfsup[parquet]', or choose --out emb.npy / emb.csv") from None
    return pa, pq


@EMBEDDING_FORMATS.register("npy")
class NpyEmbeddings:
    """The ``(N, D)`` array, its header written first (N is known from the chunks), then the rows as they come;
    the paths go to ``<out>.paths.txt`` (:attr:`paths_sidecar`)."""

    paths_sidecar = True

    @staticmethod
    def check() -> None:
        """Fail before any work when the format cannot be written (a missing optional library)."""

    def __init__(self, path: Path, *, rows: int, dims: int, dtype: np.dtype, metadata: dict[str, Any]):
        self.dtype = np.dtype(dtype)
        self.file = open(path, "wb")
        np.lib.format.write_array_header_1_0(self.file, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (rows, dims)})

    def write(self, paths: Sequence[str], vectors: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(vectors, dtype=self.dtype).tobytes())

    def close(self) -> None:
        self.file.close()

    @staticmethod
    def read(path: Path) -> tuple[list[str], np.ndarray]:
        array = np.load(path, allow_pickle=False)
        paths = paths_file(path).read_text(encoding="utf-8").splitlines()
        return paths, array


@EMBEDDING_FORMATS.register("parquet")
class ParquetEmbeddings:
    """``path`` + ``embedding`` (fixed-size list), one row group per chunk."""

    paths_sidecar = False

    @staticmethod
    def check() -> None:
        _pyarrow()

    def __init__(self, path: Path, *, rows: int, dims: int, dtype: np.dtype, metadata: dict[str, Any]):
        self.pa, pq = _pyarrow()
        self.dims, self.dtype = dims, np.dtype(dtype)
        value = self.pa.from_numpy_dtype(self.dtype)
        self.schema = self.pa.schema([("path", self.pa.string()), ("embedding", self.pa.list_(value, dims))],
                                     metadata={"selfsup": json.dumps(metadata)})
        self.writer = pq.ParquetWriter(str(path), self.schema)

    def write(self, paths: Sequence[str], vectors: np.ndarray) -> None:
        flat = self.pa.array(np.ascontiguousarray(vectors, dtype=self.dtype).reshape(-1))
        embedding = self.pa.FixedSizeListArray.from_arrays(flat, self.dims)
        self.writer.write_table(self.pa.Table.from_arrays([self.pa.array(list(paths), self.pa.string()), embedding],
                                                          schema=self.schema))

    def close(self) -> None:
        self.writer.close()

    @staticmethod
    def read(path: Path) -> tuple[list[str], np.ndarray]:
        _, pq = _pyarrow()
        table = pq.read_table(path)
        column = table.column("embedding").combine_chunks()
        dims = column.type.list_size
        return table.column("path").to_pylist(), column.flatten().to_numpy().reshape(-1, dims)


@EMBEDDING_FORMATS.register("csv")
class CsvEmbeddings:
    """``path,dim_0,...``: one line per image."""

    paths_sidecar = False

    @staticmethod
    def check() -> None:
        pass

    def __init__(self, path: Path, *, rows: int, dims: int, dtype: np.dtype, metadata: dict[str, Any]):
        self.file = open(path, "w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        self.writer.writerow(["path", *(f"dim_{d}" for d in range(dims))])

    def write(self, paths: Sequence[str], vectors: np.ndarray) -> None:
        text = np.char.mod("%.9g", np.asarray(vectors, dtype=np.float64))
        self.writer.writerows([path, *row] for path, row in zip(paths, text.tolist()))

    def close(self) -> None:
        self.file.close()

    @staticmethod
    def read(path: Path) -> tuple[list[str], np.ndarray]:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        header, body = rows[0], rows[1:]
        array = np.array([row[1:] for row in body], dtype=np.float32).reshape(len(body), len(header) - 1)
        return [row[0] for row in body], array


def read_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``(paths, (N, D) array)`` of an embeddings file written by ``selfsup embed`` (any registered format)."""
    return format_of(path).read(Path(path))
