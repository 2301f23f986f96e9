"""``digits``: the embedded demo dataset, generated in about a second with no download.

Source shapes are the 1,797 real handwritten 8x8 digits that ship inside scikit-learn (``load_digits``, from
the UCI "Optical Recognition of Handwritten Digits" set). Each 32x32 RGB image renders one digit with smooth
strokes (bilinear upsampling of the 8x8 grid, then a soft threshold) at a random size (12-24 px tall), aspect,
slant and position (always fully inside the canvas), in a random colour, over a random textured background
(low-frequency coloured noise, a colour gradient and, for most images, stripes of random frequency and
angle). The stroke luminance is kept at least ``_MIN_CONTRAST`` away from the background luminance wherever
the stroke lies, so every digit stays legible (also after conversion to gray).

Raw pixels and random-init features see mostly background and colour, so they classify poorly; the shape
shared by two crops of the same image is what a self-supervised method has to learn.

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

from selfsup.data.sources import ArraySource, DataError, DataSplits

SIZE = 32
DIGITS_SEED = 20240611
TRAIN_SOURCE_FRACTION = 0.78
CLASSES = [str(i) for i in range(10)]
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_MIN_CONTRAST = 0.3  # stroke vs. background luminance, on a 0..1 scale
DIGIT_HEIGHT = (12.0, 24.0)  # rendered digit height range, pixels
STRIPES_P, STRIPES_STRENGTH = 0.7, 0.3  # share of backgrounds with stripes, their maximum amplitude
# Backgrounds come from a fixed bank shared by all images (0: every image its own). With a shared bank the
# nearest raw-pixel neighbours of an image are the images on the same background, not the same digit, and a
# contrastive method cannot tell two images apart by their background alone.
BACKGROUND_BANK = 0
_STROKE_LO, _STROKE_HI = 0.3, 0.6  # soft threshold on the upsampled ink (0..1) that draws the stroke edge


def _backgrounds(rng: np.random.Generator, n: int) -> torch.Tensor:
    """(n, 3, SIZE, SIZE) float32 textured backgrounds in [0, 1] (computed in place to stay fast)."""
    # Coloured noise, smooth at two scales (a 3x3 grid plus a finer 6x6 one), upsampled once.
    coarse = torch.from_numpy(rng.random((n, 3, 3, 3), dtype=np.float32))
    fine = torch.from_numpy(rng.random((n, 3, 6, 6), dtype=np.float32))
    noise = F.interpolate(coarse, size=(6, 6), mode="bilinear", align_corners=False).mul_(0.7).add_(fine, alpha=0.3)
    bg = F.interpolate(noise, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    coords = (torch.arange(SIZE, dtype=torch.float32) - SIZE / 2) / SIZE  # -0.5..0.5
    yy, xx = coords[:, None], coords[None, :]

    def plane(angle: np.ndarray) -> torch.Tensor:  # (n, 1, SIZE, SIZE): position along a direction
        angle = torch.from_numpy(angle.astype(np.float32))[:, None, None, None]
        return torch.cos(angle) * xx + torch.sin(angle) * yy

    # A colour gradient in a random direction.
    ramp = plane(rng.uniform(0, 2 * np.pi, n))
    bg.addcmul_(torch.from_numpy(rng.uniform(-0.5, 0.5, (n, 3, 1, 1)).astype(np.float32)), ramp)
    # Stripes (70% of images) of random frequency (1.5-6 cycles per image), angle, phase, colour, strength.
    along = plane(rng.uniform(0, np.pi, n))
    freq = torch.from_numpy(rng.uniform(1.5, 6.0, (n, 1, 1, 1)).astype(np.float32))
    phase = torch.from_numpy(rng.uniform(0, 2 * np.pi, (n, 1, 1, 1)).astype(np.float32))
    wave = torch.sin(along.mul_(freq * (2 * np.pi)).add_(phase))
    colour = rng.uniform(-1, 1, (n, 3))
    colour /= np.abs(colour).max(axis=1, keepdims=True) + 1e-6
    strength = rng.uniform(0.0, STRIPES_STRENGTH, (n, 1)) * (rng.random((n, 1)) < STRIPES_P)
    bg.addcmul_(torch.from_numpy((strength * colour).astype(np.float32))[:, :, None, None], wave)
    return bg.clamp_(0, 1)


def _render_masks(rng: np.random.Generator, shapes: np.ndarray) -> torch.Tensor:
    """(n, SIZE, SIZE) stroke coverage in [0, 1] for 8x8 shapes (values 0..16) at random geometry."""
    n = len(shapes)
    height = rng.uniform(*DIGIT_HEIGHT, n)
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
    grid = F.affine_grid(torch.from_numpy(theta_t).float(), [n, 1, SIZE, SIZE], align_corners=False)
    source = torch.from_numpy(np.ascontiguousarray(shapes, dtype=np.float32) / 16.0)[:, None]
    value = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    # Soft threshold: smooth stroke edges instead of a blurry blob.
    t = value.sub_(_STROKE_LO).div_(_STROKE_HI - _STROKE_LO).clamp_(0, 1)
    return t * t * (3 - 2 * t)


def _stroke_colours(rng: np.random.Generator, bg: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Per-image stroke colours (n, 3) contrasting with the background luminance under the stroke.

    The stroke luminance keeps ``_MIN_CONTRAST`` from *every* background pixel under the stroke. When
    neither a darker nor a brighter stroke has room, the background's luminance range is compressed in
    place (into [0.45, 1] for a dark stroke, [0, 0.55] for a light one), keeping its texture."""
    n = len(bg)
    lum = torch.einsum("c,ncyx->nyx", torch.from_numpy(_LUMA), bg)
    under = mask > 0.2
    lo = torch.where(under, lum, torch.inf).amin(dim=(1, 2)).numpy().astype(np.float64)
    hi = torch.where(under, lum, -torch.inf).amax(dim=(1, 2)).numpy().astype(np.float64)
    can_dark = lo >= _MIN_CONTRAST + 0.05
    can_light = hi <= 1 - _MIN_CONTRAST - 0.05
    coin = rng.random(n) < 0.5
    dark = np.where(can_dark & can_light, coin, np.where(can_dark, True, np.where(can_light, False, coin)))
    neither = ~can_dark & ~can_light
    offset = np.where(dark, 0.45, 0.0)
    if neither.any():
        idx = torch.from_numpy(np.flatnonzero(neither))
        bg[idx] = bg[idx] * 0.55 + torch.from_numpy(offset[neither].astype(np.float32))[:, None, None, None]
        lo = np.where(neither, offset + 0.55 * lo, lo)
        hi = np.where(neither, offset + 0.55 * hi, hi)
    # Target stroke luminance, uniformly within the room left on the chosen side.
    room_dark = np.maximum(lo - _MIN_CONTRAST - 0.02, 0)
    room_light = np.minimum(hi + _MIN_CONTRAST + 0.02, 1)
    u = rng.random(n)
    target = np.where(dark, u * room_dark, room_light + u * (1 - room_light))
    # A random hue and saturation at that luminance: a random direction with zero luminance.
    luma = _LUMA.astype(np.float64)
    direction = rng.normal(size=(n, 3))
    direction -= (direction @ luma)[:, None] / (luma @ luma) * luma[None]
    direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-9
    colours = target[:, None] + rng.uniform(0, 0.6, (n, 1)) * direction
    for _ in range(3):  # clipping moves the luminance; pull it back towards the target
        colours = np.clip(colours, 0, 1)
        colours = colours + (target - colours @ luma)[:, None]
    colours = np.clip(colours, 0, 1)
    # Guarantee: where clipping left too little contrast, fall back to the gray of the target luminance.
    stroke_lum = colours @ luma
    ok = np.where(dark, stroke_lum <= lo - _MIN_CONTRAST, stroke_lum >= hi + _MIN_CONTRAST)
    return np.where(ok[:, None], colours, target[:, None]).astype(np.float32)


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
            style: str = "textured"):
    """n balanced images from the source digits ``pool``: (images uint8 (n,3,S,S), labels, source ids).

    ``style="plain"`` draws the same strokes at the same random geometry white on black (no colour, no
    background): the easy variant, where short runs of every method learn (raw pixels do well on it too)."""
    labels = rng.permutation(np.arange(n) % 10)
    ids = np.empty(n, np.int64)
    for c in range(10):
        members = pool[targets[pool] == c]
        where = np.flatnonzero(labels == c)
        ids[where] = members[rng.integers(0, len(members), len(where))]
    mask = _render_masks(rng, shapes[ids])
    if style == "plain":
        images = mask.mul(255).round_().to(torch.uint8)[:, None].expand(-1, 3, -1, -1).numpy().copy()
        return images, labels.astype(np.int64), ids
    if BACKGROUND_BANK:
        bank = _backgrounds(np.random.default_rng([DIGITS_SEED, 2]), BACKGROUND_BANK)
        bg = bank[torch.from_numpy(rng.integers(0, BACKGROUND_BANK, n))]
    else:
        bg = _backgrounds(rng, n)
    colours = torch.from_numpy(_stroke_colours(rng, bg, mask))[:, :, None, None]
    image = bg.lerp_(colours.expand_as(bg), mask[:, None].expand_as(bg))  # stroke over background
    images = image.mul_(255).round_().clamp_(0, 255).to(torch.uint8).numpy()
    return images, labels.astype(np.int64), ids


@lru_cache(maxsize=4)
def make_digits(n_train: int = 6000, n_test: int = 1000, seed: int = DIGITS_SEED,
                style: str = "textured") -> dict[str, np.ndarray]:
    """Generate the arrays (cached per arguments; the returned arrays are read-only).

    Keys: ``train_images``/``test_images`` uint8 (N, 3, 32, 32), ``train_labels``/``test_labels`` int64,
    ``train_source_ids``/``test_source_ids`` (index into scikit-learn's ``load_digits()``)."""
    shapes, targets = _load_source_digits()
    train_pool, test_pool = _source_split(targets, seed)
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    out = {}
    for split, rng, pool, n in (("train", train_rng, train_pool, n_train), ("test", test_rng, test_pool, n_test)):
        images, labels, ids = _render(rng, shapes, targets, pool, int(n), style)
        out[f"{split}_images"], out[f"{split}_labels"], out[f"{split}_source_ids"] = images, labels, ids
    for array in out.values():
        array.setflags(write=False)
    return out


@lru_cache(maxsize=8)
def _train_stats(n_train: int, n_test: int, seed: int, channels: int,
                 style: str = "textured") -> tuple[tuple[float, ...], tuple[float, ...]]:
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


def open_digits(channels: int = 3, n_train: int = 6000, n_test: int = 1000, seed: int = DIGITS_SEED,
                style: str = "textured") -> DataSplits:
    """The ``digits`` dataset as :class:`DataSplits` of two :class:`ArraySource` (10 classes, 32x32).

    ``channels`` 3 (RGB) or 1 (luminance). Both sources carry ``mean``/``std`` of the train split (per
    channel, [0, 1] units) and ``source_ids`` (which ``load_digits()`` digit each image shows).
    ``style="plain"`` is ``digits-plain``: the same strokes and geometry, white on black."""
    if channels not in (1, 3):
        raise DataError(f"the digits dataset is RGB; channels (data.channels) must be 1 or 3, not {channels}")
    arrays = make_digits(int(n_train), int(n_test), int(seed), style)
    mean, std = _train_stats(int(n_train), int(n_test), int(seed), channels, style)
    name = "digits" if style == "textured" else f"digits-{style}"
    sources = {}
    for split in ("train", "test"):
        source = ArraySource(arrays[f"{split}_images"], channels=channels, labels=arrays[f"{split}_labels"],
                             classes=CLASSES, name=f"{name}/{split}", mean=mean, std=std)
        source.source_ids = arrays[f"{split}_source_ids"]
        source.flips_preserve_labels = False  # a mirrored 2, 3, 7 or 9 is not that digit (data.hflip's default)
        sources[split] = source
    return DataSplits(train=sources["train"], test=sources["test"])


def open_plain_digits(channels: int = 3, **kwargs) -> DataSplits:
    """``digits-plain``: the embedded digits drawn white on black (see :func:`open_digits`)."""
    return open_digits(channels, style="plain", **kwargs)
