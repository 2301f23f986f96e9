"""``digits``: the embedded demo dataset, generated in about a second with no download.

Source shapes are the 1,797 real handwritten 8x8 digits that ship inside scikit-learn (``load_digits``, from
the UCI "Optical Recognition of Handwritten Digits" set). Each 32x32 image renders one digit with smooth strokes
(bilinear upsampling of the 8x8 grid, then a soft threshold) at a random size, aspect, slant and position
(always fully inside the canvas).

Two styles:

- ``digits`` (``style="noisy"``, the demo's data): a light-gray digit 10-20 px tall over a dark-gray
  background, under strong per-pixel Gaussian noise (sigma half the stroke contrast), 1,000 train images.
  Raw pixels and random-init features classify it poorly: the noise and the wide range of positions and
  sizes dominate pixel distances and random filters. The noise is independent per pixel and statistically
  the same in every image, so it is no shortcut for a self-supervised method (unlike a per-image background
  texture or colour, which survives crops and colour jitter, and which earlier versions of this set had: a
  contrastive method then learns to recognise the background instead of the digit). What two crops of one
  image share, and a method has to learn, is the digit's shape, wherever and however large it is.
- ``digits-plain`` (``style="plain"``): white strokes 12-24 px tall on black, no noise, 6,000 train images.
  The easy variant: short runs of every method learn on it, and raw pixels do well on it too.

Train images are drawn from a fixed ~78% of the source digits (stratified by class), test images from the
other ~22%: test digits are handwriting never seen in training. Labels are exactly balanced.
"""
from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.data.sources import DATASETS, ArraySource, DataError, DataSplits

SIZE = 32
DIGITS_SEED = 20240611
TRAIN_SOURCE_FRACTION = 0.78
CLASSES = [str(i) for i in range(10)]
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_STROKE_LO, _STROKE_HI = 0.3, 0.6  # soft threshold on the upsampled ink (0..1) that draws the stroke edge
# Per style: rendered digit height range (pixels), default number of train images, and for the noisy style the
# background level, stroke contrast and noise sigma (0..1 units).
STYLES = {
    "noisy": {"height": (10.0, 20.0), "n_train": 1000, "background": 0.25, "contrast": 0.5, "noise": 0.25},
    "plain": {"height": (12.0, 24.0), "n_train": 6000},
}


def _style(style: str) -> dict:
    if style not in STYLES:
        raise DataError(f"unknown digits style {style!r}; choose one of {sorted(STYLES)}")
    return STYLES[style]


#: What :func:`_draw_geometry` returns per image: the rendered cell's size (pixels), its rotation (radians,
#: positive turns the digit clockwise on screen), its shear (positive moves its bottom to the right) and its
#: centre (pixels, x right, y down). The captions of ``digits-captions`` describe these.
GEOMETRY_KEYS = ("height", "width", "theta", "shear", "centre_x", "centre_y")


def _render_masks(rng: np.random.Generator, shapes: np.ndarray,
                  height_range: tuple[float, float] = STYLES["plain"]["height"]) -> torch.Tensor:
    """(n, SIZE, SIZE) stroke coverage in [0, 1] for 8x8 shapes (values 0..16) at random geometry."""
    return _draw_masks(shapes, **_draw_geometry(rng, len(shapes), height_range))


def _draw_geometry(rng: np.random.Generator, n: int, height_range: tuple[float, float]) -> dict[str, np.ndarray]:
    """Random size, aspect, rotation, shear and position of n digits, each fully inside the canvas. (The order
    of the draws from ``rng`` is the images' identity: changing it changes every generated dataset.)"""
    height = rng.uniform(*height_range, n)
    width = height * rng.uniform(0.8, 1.2, n)
    theta = np.deg2rad(rng.uniform(-12, 12, n))
    shear = rng.uniform(-0.2, 0.2, n)
    cos, sin = np.cos(theta), np.sin(theta)
    # Half-extents of the transformed box, so that the whole 8x8 cell lands inside the canvas.
    corners_u = np.array([-0.5, 0.5, 0.5, -0.5])[None] * width[:, None]
    corners_v = np.array([-0.5, -0.5, 0.5, 0.5])[None] * height[:, None]
    cu = corners_u + shear[:, None] * corners_v
    cx = cos[:, None] * cu - sin[:, None] * corners_v
    cy = sin[:, None] * cu + cos[:, None] * corners_v
    half_x, half_y = np.abs(cx).max(1), np.abs(cy).max(1)
    fit = np.minimum(1.0, (SIZE / 2 - 0.5) / np.maximum(half_x, half_y))  # shrink boxes that would not fit
    width, height, half_x, half_y = width * fit, height * fit, half_x * fit, half_y * fit
    centre_x = rng.uniform(half_x, SIZE - half_x)
    centre_y = rng.uniform(half_y, SIZE - half_y)
    return {"height": height, "width": width, "theta": theta, "shear": shear, "centre_x": centre_x,
            "centre_y": centre_y}


def _draw_masks(shapes: np.ndarray, height: np.ndarray, width: np.ndarray, theta: np.ndarray, shear: np.ndarray,
                centre_x: np.ndarray, centre_y: np.ndarray) -> torch.Tensor:
    """Render 8x8 shapes at the given geometry (see :func:`_draw_geometry`) as stroke coverage in [0, 1]
    (float64)."""
    n = len(shapes)
    cos, sin = np.cos(theta), np.sin(theta)
    # Inverse map every canvas pixel into the 8x8 grid and sample bilinearly (zero outside). In the
    # normalized coordinates of affine_grid/grid_sample, with canvas offsets dx = 16 x_out + 16 - centre_x:
    # x_in = (2 / width) (u' - shear v), y_in = (2 / height) v, where (u', v) = rotate(-theta) (dx, dy).
    a, b = 2 / width * (cos + shear * sin), 2 / width * (sin - shear * cos)
    c, d = 2 / height * -sin, 2 / height * cos
    half = SIZE / 2
    theta_t = np.stack([
        np.stack([half * a, half * b, a * (half - centre_x) + b * (half - centre_y)], 1),
        np.stack([half * c, half * d, c * (half - centre_x) + d * (half - centre_y)], 1),
    ], 1)
    # In float64: in float32, MKL's AVX-512 matmul inside affine_grid (Intel CPUs; AMD ones get its AVX2 kernels)
    # rounded a few of a split's 1M pixels across the uint8 boundary; in float64 every CPU draws the same images.
    grid = F.affine_grid(torch.from_numpy(theta_t), [n, 1, SIZE, SIZE], align_corners=False)
    source = torch.from_numpy(np.ascontiguousarray(shapes, dtype=np.float64) / 16.0)[:, None]
    value = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    # Soft threshold: smooth stroke edges instead of a blurry blob.
    t = value.sub_(_STROKE_LO).div_(_STROKE_HI - _STROKE_LO).clamp_(0, 1)
    return t * t * (3 - 2 * t)


def _load_source_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits: (shapes float32 (N, 8, 8) in 0..16, targets int64 (N,)).

    Reads the CSV that ships inside scikit-learn directly (importing ``sklearn.datasets`` costs seconds);
    falls back to ``load_digits()`` if scikit-learn ever moves the file."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise DataError("the digits dataset needs scikit-learn (pip install scikit-learn)")
    for location in spec.submodule_search_locations or []:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                data = np.loadtxt(f, delimiter=",", dtype=np.float32)
            if data.shape == (1797, 65):
                return data[:, :64].reshape(-1, 8, 8), data[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


def _source_split(targets: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split of the source digits: (train ids, test ids), sorted."""
    rng = np.random.default_rng([seed, 1])
    train, test = [], []
    for c in range(10):
        ids = rng.permutation(np.flatnonzero(targets == c))
        k = int(round(len(ids) * TRAIN_SOURCE_FRACTION))
        train.append(ids[:k])
        test.append(ids[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _render(rng: np.random.Generator, shapes: np.ndarray, targets: np.ndarray, pool: np.ndarray, n: int,
            style: str = "noisy"):
    """n balanced images from the source digits ``pool``: (images uint8 (n,3,S,S), labels, source ids,
    geometry)."""
    spec = STYLES[style]
    labels = rng.permutation(np.arange(n) % 10)
    ids = np.empty(n, np.int64)
    for c in range(10):
        members = pool[targets[pool] == c]
        where = np.flatnonzero(labels == c)
        ids[where] = members[rng.integers(0, len(members), len(where))]
    geometry = _draw_geometry(rng, n, spec["height"])  # kept: the captions of digits-captions describe it
    image = _draw_masks(shapes[ids], **geometry)
    if style == "noisy":
        noise = torch.from_numpy(rng.standard_normal(image.shape, dtype=np.float32)).double()
        image = image.mul_(spec["contrast"]).add_(spec["background"]).add_(noise, alpha=spec["noise"]).clamp_(0, 1)
    gray = image.mul_(255).round_().to(torch.uint8)
    return gray[:, None].expand(-1, 3, -1, -1).numpy().copy(), labels.astype(np.int64), ids, geometry


@lru_cache(maxsize=4)
def make_digits(n_train: int | None = None, n_test: int = 1000, seed: int = DIGITS_SEED,
                style: str = "noisy") -> dict[str, np.ndarray]:
    """Generate the arrays (cached per arguments; the returned arrays are read-only).

    ``n_train`` None: the style's default (1,000 noisy, 6,000 plain).
    Keys: ``train_images``/``test_images`` uint8 (N, 3, 32, 32), ``train_labels``/``test_labels`` int64,
    ``train_source_ids``/``test_source_ids`` (index into scikit-learn's ``load_digits()``), and each image's
    geometry ``{split}_{key}`` for ``key`` in :data:`GEOMETRY_KEYS` (float64)."""
    spec = _style(style)
    n_train = spec["n_train"] if n_train is None else n_train
    shapes, targets = _load_source_digits()
    train_pool, test_pool = _source_split(targets, seed)
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    out = {}
    for split, rng, pool, n in (("train", train_rng, train_pool, n_train), ("test", test_rng, test_pool, n_test)):
        images, labels, ids, geometry = _render(rng, shapes, targets, pool, int(n), style)
        out[f"{split}_images"], out[f"{split}_labels"], out[f"{split}_source_ids"] = images, labels, ids
        out.update({f"{split}_{key}": value for key, value in geometry.items()})
    for array in out.values():
        array.setflags(write=False)
    return out


@lru_cache(maxsize=8)
def _train_stats(n_train: int, n_test: int, seed: int, channels: int,
                 style: str = "noisy") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std ([0, 1] units) of the train images, from 256-bin histograms."""
    images = make_digits(n_train, n_test, seed, style)["train_images"]
    if channels == 1:  # as ArraySource.get_image converts
        gray = np.tensordot(_LUMA, images.astype(np.float32), axes=(0, 1))
        images = np.clip(np.rint(gray), 0, 255).astype(np.uint8)[:, None]
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = np.bincount(images[:, c].reshape(-1), minlength=256).astype(np.float64)
        mean = float(hist @ values / hist.sum())
        means.append(mean)
        stds.append(float(np.sqrt(hist @ (values - mean) ** 2 / hist.sum())))
    return tuple(means), tuple(stds)


@DATASETS.register("digits")
def open_digits(channels: int = 3, n_train: int | None = None, n_test: int = 1000, seed: int = DIGITS_SEED,
                style: str = "noisy") -> DataSplits:
    """The ``digits`` dataset as :class:`DataSplits` of two :class:`ArraySource` (10 classes, 32x32).

    ``channels`` 3 (RGB) or 1 (luminance). Both sources carry ``mean``/``std`` of the train split (per
    channel, [0, 1] units) and ``source_ids`` (which ``load_digits()`` digit each image shows).
    ``style="plain"`` is ``digits-plain``: white strokes on black, larger, no noise (see the module docstring)."""
    if channels not in (1, 3):
        raise DataError(f"the digits dataset is RGB; channels (data.channels) must be 1 or 3, not {channels}")
    spec = _style(style)
    n_train = int(spec["n_train"] if n_train is None else n_train)
    arrays = make_digits(n_train, int(n_test), int(seed), style)
    mean, std = _train_stats(n_train, int(n_test), int(seed), channels, style)
    name = "digits" if style == "noisy" else f"digits-{style}"
    sources = {}
    for split in ("train", "test"):
        source = ArraySource(arrays[f"{split}_images"], channels=channels, labels=arrays[f"{split}_labels"],
                             classes=CLASSES, name=f"{name}/{split}", mean=mean, std=std)
        source.source_ids = arrays[f"{split}_source_ids"]
        source.flips_preserve_labels = False  # a mirrored 2, 3, 7 or 9 is not that digit (data.hflip's default)
        sources[split] = source
    return DataSplits(train=sources["train"], test=sources["test"])


@DATASETS.register("digits-plain")
def open_plain_digits(channels: int = 3, **kwargs) -> DataSplits:
    """``digits-plain``: the embedded digits drawn white on black, without noise (see :func:`open_digits`)."""
    return open_digits(channels, style="plain", **kwargs)
