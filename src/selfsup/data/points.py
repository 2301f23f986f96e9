"""Point clouds (the field kind ``points``): ``.npy``, ``.ply`` (ascii and binary little-endian) and ``.xyz`` files.

A cloud is an (N, 3) float32 array of x, y, z (further columns, such as normals or colours, are dropped); N
differs between clouds (the views resample every cloud to one point count, :mod:`selfsup.views.points`). A
folder of clouds is a :class:`PointSource`: class sub-folders give labels (``root/<class>/<file>``), files at
the top level are unlabelled. Empty files, files without three coordinates, non-finite coordinates and
unreadable headers are skipped and listed in ``bad_files`` with the reason.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from selfsup.data.badfiles import check_bad_fraction
from selfsup.data.sources import DataError, DataSplits, _hash
from selfsup.data.splits import stratified_holdout
from selfsup.fields import POINTS_FIELDS

POINT_SUFFIXES = (".npy", ".ply", ".xyz")
_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


class PointFileError(ValueError):
    """One file is not a usable point cloud (the folder skips it and lists why)."""


def _read_ply(path: Path) -> np.ndarray:
    with open(path, "rb") as file:
        if file.readline().strip() != b"ply":
            raise PointFileError("not a PLY file (no 'ply' magic line)")
        fmt, elements, current = None, [], None
        while True:
            line = file.readline()
            if not line:
                raise PointFileError("the header has no end_header line")
            words = line.decode("ascii", "replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                break
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                current = [words[1], int(words[2]), []]
                elements.append(current)
            elif words[0] == "property" and current is not None:
                if words[1] == "list":
                    if current[0] == "vertex":
                        raise PointFileError("list properties in the vertex element are not supported")
                    current[2].append(("list", words[2], words[3], words[4]))
                else:
                    current[2].append((words[2], _PLY_TYPES.get(words[1], "f4")))
        if fmt not in ("ascii", "binary_little_endian"):
            raise PointFileError(f"PLY format {fmt!r} is not supported (ascii or binary_little_endian)")
        vertex = next((e for e in elements if e[0] == "vertex"), None)
        if vertex is None or vertex[1] == 0:
            raise PointFileError("no vertices")
        if elements[0] is not vertex:
            raise PointFileError("the vertex element must come first")
        names = [p[0] for p in vertex[2]]
        if not {"x", "y", "z"} <= set(names):
            raise PointFileError(f"the vertices have no x, y, z properties (they have {', '.join(names)})")
        if fmt == "ascii":
            lines = [file.readline() for _ in range(vertex[1])]
            try:
                table = np.array([[float(v) for v in line.split()[:len(names)]] for line in lines], dtype=np.float64)
            except ValueError as error:
                raise PointFileError(f"a vertex line is not numeric ({error})") from None
            if table.ndim != 2 or table.shape != (vertex[1], len(names)):
                raise PointFileError(f"expected {vertex[1]} vertex lines of {len(names)} values")
            columns = {name: table[:, j] for j, name in enumerate(names)}
        else:
            dtype = np.dtype([(name, "<" + t) for name, t in vertex[2]])
            data = np.frombuffer(file.read(dtype.itemsize * vertex[1]), dtype=dtype)
            if len(data) != vertex[1]:
                raise PointFileError(f"the file ends after {len(data)} of {vertex[1]} vertices")
            columns = {name: data[name] for name in names}
    return np.stack([columns["x"], columns["y"], columns["z"]], axis=1)


def _read_xyz(path: Path) -> np.ndarray:
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        words = line.replace(",", " ").split()
        if not words or words[0].startswith("#"):
            continue
        try:
            rows.append([float(v) for v in words[:3]])
        except ValueError:
            raise PointFileError(f"line {number} is not numeric: {line[:40]!r}") from None
        if len(rows[-1]) < 3:
            raise PointFileError(f"line {number} has fewer than 3 coordinates")
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def read_points(path: str | os.PathLike) -> np.ndarray:
    """(N, 3) float32 coordinates of a .npy / .ply / .xyz file; :class:`PointFileError` says why not."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".ply":
            array = _read_ply(path)
        elif suffix == ".xyz":
            array = _read_xyz(path)
        else:
            raise PointFileError(f"not a point-cloud file ({', '.join(POINT_SUFFIXES)})")
    except (OSError, ValueError, EOFError) as error:
        if isinstance(error, PointFileError):
            raise
        raise PointFileError(f"unreadable: {error}") from None
    if array.ndim != 2 or array.shape[1] < 3:
        raise PointFileError(f"expected an (N, 3) array of coordinates, got shape {tuple(array.shape)}")
    if array.shape[0] == 0:
        raise PointFileError("empty: no points")
    points = np.asarray(array[:, :3], dtype=np.float32)
    if not np.isfinite(points).all():
        raise PointFileError("non-finite coordinates")
    return points


class PointSource:
    """Point clouds in memory ((N_i, 3) float32 each) with optional labels: the ``points`` kind's source."""

    fields = POINTS_FIELDS
    channels = 1
    mean, std = (0.0,), (1.0,)  # the views centre and scale every cloud: no per-channel normalisation
    flips_preserve_labels = True
    channel_kind = "bands"

    def __init__(self, clouds: list[np.ndarray], labels: np.ndarray | None = None, classes: list[str] | None = None,
                 name: str = "points", bad_files=None, paths: list[str] | None = None):
        self.clouds = [np.ascontiguousarray(c, dtype=np.float32) for c in clouds]
        self.labels, self.classes, self.name = labels, classes, name
        self.bad_files, self.paths = list(bad_files or []), paths

    def __len__(self) -> int:
        return len(self.clouds)

    def get_image(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.clouds[index])

    def take(self, indices: np.ndarray, name: str) -> "PointSource":
        labels = None if self.labels is None else self.labels[indices]
        paths = None if self.paths is None else [self.paths[i] for i in indices]
        return PointSource([self.clouds[i] for i in indices], labels, self.classes, name, paths=paths)

    def fingerprint(self) -> str:
        labels = self.labels if self.labels is not None else np.zeros(0, dtype=np.int64)
        sizes = np.array([len(c) for c in self.clouds], dtype=np.int64)
        return _hash("points", sizes, labels, *(c for c in self.clouds))

    def __repr__(self) -> str:
        return f"PointSource({self.name!r}, {len(self)} clouds)"


def point_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in POINT_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _npy_holds_points(path: Path) -> bool:
    """An ``.npy`` file holds an (N, 3) array (read from its header only): ``.npy`` is also how raw domain
    images (C, H, W) come, which are not point clouds."""
    try:
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except (OSError, ValueError):
        return True  # unreadable: a point cloud for counting's sake; reading it lists it as bad
    return len(shape) == 2 and shape[1] == 3


def is_point_folder(path: Path) -> bool:
    """A folder whose files are mostly point clouds (``.ply``, ``.xyz``, and ``.npy`` files of (N, 3) arrays:
    the first few ``.npy`` files decide for all of them)."""
    if not path.is_dir():
        return False
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    arrays = sorted(p for p in files if p.suffix.lower() == ".npy")
    if arrays and sum(_npy_holds_points(p) for p in arrays[:5]) * 2 <= min(len(arrays), 5):
        files = [p for p in files if p.suffix.lower() != ".npy"] or files  # image arrays: not point clouds
        if all(p.suffix.lower() == ".npy" for p in files):
            return False
    return bool(files) and sum(p.suffix.lower() in POINT_SUFFIXES for p in files) * 2 > len(files)


def open_point_folder(path: str | os.PathLike, seed: int = 0, holdout_fraction: float = 0.2,
                      max_bad_fraction: float = 0.1, log=lambda message: None) -> DataSplits:
    """A folder of clouds (class sub-folders for labels) as train and stratified held-out :class:`PointSource`."""
    root = Path(path)
    files = point_files(root)
    if not files:
        raise DataError(f"{root}: no point-cloud files ({', '.join(POINT_SUFFIXES)})")
    clouds, names, bad, kept = [], [], [], []
    for file in files:
        try:
            clouds.append(read_points(file))
        except PointFileError as error:
            bad.append((str(file), str(error)))
            continue
        kept.append(str(file.relative_to(root)))
        parts = file.relative_to(root).parts
        names.append(parts[0] if len(parts) > 1 else None)
    check_bad_fraction(bad, len(files), f"under {root}", max_bad_fraction, entry="point-cloud file",
                       problem="could not be read")
    if bad:
        log(f"{root}: skipped {len(bad)} unreadable point-cloud file(s), e.g. {bad[0][0]}: {bad[0][1]}")
    labelled = all(n is not None for n in names)
    classes = sorted(set(names)) if labelled else None
    labels = np.array([classes.index(n) for n in names], dtype=np.int64) if labelled else None
    source = PointSource(clouds, labels, classes, root.name, bad, kept)
    if labels is None:
        return DataSplits(train=source, test=None)
    keep, held = stratified_holdout(labels, holdout_fraction, seed)
    train, test = source.take(keep, f"{root.name}/train"), source.take(held, f"{root.name}/holdout")
    train.bad_files = bad
    return DataSplits(train=train, test=test if len(held) else None)


__all__ = ["POINT_SUFFIXES", "PointFileError", "PointSource", "is_point_folder", "open_point_folder", "read_points"]
