"""Procedural fractal images from random iterated function systems (``data.source=fractals`` or
``fractals-multi``): pre-training data that needs no files (FractalDB, Kataoka et al., "Pre-training without
Natural Images", ACCV 2020; the multi-instance variant places several fractals in one image, as in Anderson &
Farrell, "Improving Fractal Pre-training", WACV 2022).

A class is one IFS: 2 to 4 affine maps ``x -> A x + b`` with entries uniform in [-1, 1], drawn from
(seed, class) and kept only when it is contractive on average (mean |det A| below 1, every map's spectral
norm below 1) and its attractor fills enough of its bounding box (FractalDB's filling-rate test), else drawn
again. An instance of a class is its attractor rendered by the chaos game (a few thousand points iterated in
parallel, vectorised in numpy; map k chosen with probability proportional to |det A_k|) with its maps'
parameters jittered slightly (FractalDB's intra-class variation), a random colour per map and a random
flip, on black. Everything comes from (seed, class, instance): image i is instance i // classes of class
i mod classes, rendered when asked (in the DataLoader workers), the same every time.

``fractals-multi``: each image holds 2-4 fractals of random classes at random places and scales; its label is
the class of the largest one.
"""
from __future__ import annotations

import numpy as np
import torch

from selfsup.data.sources import DATASETS, CaptionedSource, DataError, DataSplits, _hash

_POINTS, _STEPS, _BURN_IN = 1024, 12, 6  # chaos game: parallel points x iterations (the first ones discarded)
_MIN_FILL = 0.12  # fraction of the attractor's bounding box its points cover (at 32 x 32), at least


def _draw_system(rng: np.random.Generator) -> np.ndarray:
    """One IFS: (maps, 6) rows of (a, b, c, d, e, f) for x' = [[a, b], [c, d]] x + [e, f]."""
    for _ in range(200):
        maps = rng.uniform(-1.0, 1.0, size=(int(rng.integers(2, 5)), 6))
        linear = maps[:, :4].reshape(-1, 2, 2)
        if np.abs(np.linalg.det(linear)).mean() < 1.0 and (np.linalg.norm(linear, ord=2, axis=(1, 2)) < 1.0).all():
            points = _chaos_game(maps, np.random.default_rng(0), 512)
            if _fill(points) >= _MIN_FILL:
                return maps
    return maps  # practically never reached: a last system that is at least drawn from the seed


def _chaos_game(maps: np.ndarray, rng: np.random.Generator, points: int = _POINTS) -> np.ndarray:
    """Points of the attractor, (points x (steps - burn-in), 2), and the map that made each (column 2)."""
    linear, shift = maps[:, :4].reshape(-1, 2, 2), maps[:, 4:]
    weights = np.abs(np.linalg.det(linear)) + 1e-3
    choices = rng.choice(len(maps), size=(_STEPS, points), p=weights / weights.sum())
    x = rng.uniform(-1, 1, size=(points, 2))
    out = []
    for step in range(_STEPS):
        k = choices[step]
        x = np.einsum("pij,pj->pi", linear[k], x) + shift[k]
        if step >= _BURN_IN:
            out.append(np.concatenate([x, k[:, None].astype(np.float64)], axis=1))
    return np.concatenate(out)


def _fill(points: np.ndarray, grid: int = 32) -> float:
    xy = points[:, :2]
    lo, hi = xy.min(0), xy.max(0)
    if not np.isfinite(xy).all() or (hi - lo).min() < 1e-6:
        return 0.0
    cells = np.floor((xy - lo) / (hi - lo + 1e-9) * grid).astype(np.int64)
    return len(np.unique(cells[:, 0] * grid + cells[:, 1])) / grid ** 2


def _render(canvas: np.ndarray, points: np.ndarray, colours: np.ndarray, box: tuple[float, float, float]) -> None:
    """Draw ``points`` (x, y, map) into ``canvas`` (H, W, 3) inside the square ``box`` = (top, left, side)."""
    size = canvas.shape[0]
    xy = points[:, :2]
    lo, hi = np.percentile(xy, 1, axis=0), np.percentile(xy, 99, axis=0)
    span = (hi - lo).max() + 1e-9
    top, left, side = box
    uv = (xy - lo) / span * (side - 1)
    rows = np.clip(np.rint(top + uv[:, 1]), 0, size - 1).astype(np.int64)
    cols = np.clip(np.rint(left + uv[:, 0]), 0, size - 1).astype(np.int64)
    canvas[rows, cols] = colours[points[:, 2].astype(np.int64)]


class FractalSource(CaptionedSource):
    """``count`` fractal images of ``classes`` IFS classes at ``size`` x ``size``, rendered on demand."""

    def __init__(self, classes: int = 100, count: int = 10000, size: int = 48, seed: int = 0,
                 instances_per_image: tuple[int, int] = (1, 1), name: str = "fractals", first: int = 0):
        self.num_classes, self.count, self.size, self.seed = int(classes), int(count), int(size), int(seed)
        self.instances, self.first, self.name = instances_per_image, int(first), name
        self.systems = [_draw_system(np.random.default_rng([seed, c, 0xF2AC])) for c in range(self.num_classes)]
        self.channels, self.bad_files = 3, []
        self.classes = [f"ifs{c:03d}" for c in range(self.num_classes)]
        self.labels = np.array([self._label(i) for i in range(self.count)], np.int64)
        self._fingerprint = None

    def __len__(self) -> int:
        return self.count

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.first + index, 0x1A5])

    def _layout(self, index: int) -> list[tuple[int, tuple[float, float, float]]]:
        """(class, box) of each fractal of image ``index``, the largest first."""
        if self.instances == (1, 1):
            margin = self.size * 0.06
            return [((self.first + index) % self.num_classes, (margin, margin, self.size - 2 * margin))]
        rng = self._rng(index)
        n = int(rng.integers(self.instances[0], self.instances[1] + 1))
        sides = np.sort(rng.uniform(0.35, 0.7, size=n) * self.size)[::-1]
        out = []
        for j, side in enumerate(sides):
            top, left = rng.uniform(0, self.size - side, size=2)
            cls = (self.first + index) % self.num_classes if j == 0 else int(rng.integers(self.num_classes))
            out.append((cls, (float(top), float(left), float(side))))
        return out

    def _label(self, index: int) -> int:
        return self._layout(index)[0][0]

    def get_image(self, index: int) -> torch.Tensor:
        if not -self.count <= index < self.count:
            raise IndexError(f"index {index} out of range for {self.count} images")
        index %= self.count
        rng = self._rng(index + 7_919 * self.count)  # the instance's own stream, apart from the layout's
        canvas = np.zeros((self.size, self.size, 3), np.uint8)
        for cls, box in reversed(self._layout(index)):  # the largest drawn last, on top
            maps = self.systems[cls] * (1.0 + rng.uniform(-0.08, 0.08, size=self.systems[cls].shape))
            points = _chaos_game(maps, rng)
            if not np.isfinite(points).all():
                points = _chaos_game(self.systems[cls], rng)
            if rng.random() < 0.5:
                points[:, 0] = -points[:, 0]
            colours = rng.integers(64, 256, size=(len(maps), 3)).astype(np.uint8)
            _render(canvas, points, colours, box)
        return torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _hash(b"fractals", f"{self.name} {self.count} {self.size} {self.seed} {self.first} "
                                      f"{self.instances}", *self.systems)
        return self._fingerprint

    def __repr__(self) -> str:
        return f"FractalSource({self.name!r}, {self.count} images of {self.num_classes} IFS classes, {self.size} px)"


def fractal_splits(classes: int = 100, train: int = 20000, test: int = 2000, size: int = 48, seed: int = 0,
                   instances_per_image: tuple[int, int] = (1, 1), name: str = "fractals") -> DataSplits:
    """Train and test images of the same classes (different instances: the test split starts after train)."""
    return DataSplits(
        train=FractalSource(classes, train, size, seed, instances_per_image, name=f"{name}/train"),
        test=FractalSource(classes, test, size, seed, instances_per_image, name=f"{name}/test", first=train))


@DATASETS.register("fractals")
def open_fractals(channels: int = 3) -> DataSplits:
    """FractalDB-style single fractals: 100 IFS classes, 20000 train + 2000 test images of 48 px, seed 0."""
    _rgb_only(channels)
    return fractal_splits()


@DATASETS.register("fractals-multi")
def open_fractals_multi(channels: int = 3) -> DataSplits:
    """Multi-instance fractals: 2-4 fractals per image, labelled by the largest (100 classes, 48 px)."""
    _rgb_only(channels)
    return fractal_splits(instances_per_image=(2, 4), name="fractals-multi")


def _rgb_only(channels: int) -> None:
    if channels != 3:
        raise DataError(f"the fractal datasets are RGB: data.channels must be 3 (or unset), not {channels}")
