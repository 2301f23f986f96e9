"""The embedded ``point-shapes`` dataset: generated point clouds of twelve shape families, a demo documented as
such (no download; the clouds are drawn from a fixed seed at first use).

Families: sphere, ellipsoid, cube, slab, cylinder, cone, torus, square, tetrahedron, helix, dumbbell, cross.
Every cloud samples its family's surface (or curve) uniformly-ish at ``points`` points, then gets a random
pose: scales of 0.75-1.25 per axis, a uniformly random rotation (QR of a Gaussian matrix), a shift of up to
0.2, and Gaussian noise of 0.01. The classes are told apart by shape alone, whatever the pose. Train and test
clouds come from different generator seeds (the held-out split).
"""
from __future__ import annotations

import functools

import numpy as np

from selfsup.data.points import PointSource
from selfsup.data.sources import DATASETS, DataError, DataSplits


def _sphere(rng, n):
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _cube_surface(rng, n, sides=(1.0, 1.0, 1.0)):
    p = rng.uniform(-1, 1, (n, 3))
    axis = rng.integers(0, 3, n)
    p[np.arange(n), axis] = np.sign(rng.uniform(-1, 1, n))
    return p * np.array(sides)


def _cylinder(rng, n):
    t = rng.uniform(0, 2 * np.pi, n)
    return np.stack([np.cos(t), np.sin(t), rng.uniform(-1, 1, n)], axis=1)


def _cone(rng, n):
    t, h = rng.uniform(0, 2 * np.pi, n), np.sqrt(rng.uniform(0, 1, n))  # area grows with the radius
    return np.stack([h * np.cos(t), h * np.sin(t), 1 - 2 * h], axis=1)


def _torus(rng, n):
    u, v = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n)
    return np.stack([(0.7 + 0.3 * np.cos(v)) * np.cos(u), (0.7 + 0.3 * np.cos(v)) * np.sin(u), 0.3 * np.sin(v)], 1)


def _square(rng, n):
    return np.stack([rng.uniform(-1, 1, n), rng.uniform(-1, 1, n), np.zeros(n)], axis=1)


def _tetrahedron(rng, n):
    corners = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.float64)
    faces = [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]
    face = rng.integers(0, 4, n)
    a, b = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    flip = a + b > 1
    a, b = np.where(flip, 1 - a, a), np.where(flip, 1 - b, b)
    tri = np.array(faces)[face]
    p0, p1, p2 = corners[tri[:, 0]], corners[tri[:, 1]], corners[tri[:, 2]]
    return p0 + a[:, None] * (p1 - p0) + b[:, None] * (p2 - p0)


def _helix(rng, n):
    t = rng.uniform(0, 4 * np.pi, n)
    return np.stack([np.cos(t), np.sin(t), t / (2 * np.pi) - 1], axis=1) + 0.05 * rng.standard_normal((n, 3))


def _dumbbell(rng, n):
    ends = rng.integers(0, 3, n)
    p = 0.45 * _sphere(rng, n) + np.where(ends[:, None] == 0, [[0, 0, 0.8]], [[0, 0, -0.8]])
    rod = np.stack([0.08 * rng.standard_normal(n), 0.08 * rng.standard_normal(n), rng.uniform(-0.8, 0.8, n)], 1)
    return np.where(ends[:, None] == 2, rod, p)


def _cross(rng, n):
    axis = rng.integers(0, 3, n)
    p = 0.08 * rng.standard_normal((n, 3))
    p[np.arange(n), axis] = rng.uniform(-1, 1, n)
    return p


SHAPES = {
    "sphere": _sphere, "ellipsoid": lambda rng, n: _sphere(rng, n) * [1.0, 0.5, 0.3], "cube": _cube_surface,
    "slab": lambda rng, n: _cube_surface(rng, n, (1.0, 1.0, 0.25)), "cylinder": _cylinder, "cone": _cone,
    "torus": _torus, "square": _square, "tetrahedron": _tetrahedron, "helix": _helix, "dumbbell": _dumbbell,
    "cross": _cross,
}
SHAPE_CLASSES = list(SHAPES)


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def generate_shapes(per_class: int, seed: int, points: int = 256) -> tuple[list[np.ndarray], np.ndarray]:
    """``per_class`` posed, noisy clouds of every family (class-major order) and their labels."""
    rng = np.random.default_rng(seed)
    clouds, labels = [], []
    for label, sample in enumerate(SHAPES.values()):
        for _ in range(per_class):
            cloud = np.asarray(sample(rng, points), dtype=np.float64) * rng.uniform(0.75, 1.25, 3)
            cloud = cloud @ random_rotation(rng).T + rng.uniform(-0.2, 0.2, 3)
            clouds.append((cloud + 0.01 * rng.standard_normal(cloud.shape)).astype(np.float32))
            labels.append(label)
    return clouds, np.array(labels, dtype=np.int64)


@functools.lru_cache(maxsize=2)
def _shape_splits(train_per_class: int, test_per_class: int, points: int):
    return generate_shapes(train_per_class, 0, points), generate_shapes(test_per_class, 1, points)


@DATASETS.register("point-shapes")
def open_point_shapes(channels: int | None = None, train_per_class: int = 100, test_per_class: int = 30,
                      points: int = 256) -> DataSplits:
    """1,200 training and 360 held-out clouds of 256 points, 12 classes."""
    if channels not in (None, 1):
        raise DataError("point clouds have no channels; leave data.channels unset")
    (train, train_y), (test, test_y) = _shape_splits(train_per_class, test_per_class, points)
    return DataSplits(train=PointSource(train, train_y, SHAPE_CLASSES, "point-shapes/train"),
                      test=PointSource(test, test_y, SHAPE_CLASSES, "point-shapes/test"))
