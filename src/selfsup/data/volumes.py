"""A toy 3-D volume set (generated, *synthetic*): one-channel uint16 volumes of blobs, tubes, shells or layers at
random pose, a CT / microscopy-like stand-in for 3-D masked modelling. Each volume's mean, contrast, noise
level and a smooth bias field are drawn at random, so that only the 3-D structure tells the classes apart:
raw-voxel kNN@20 53.8% on 4 classes (chance 25%), a logistic regression on each volume's mean and std 27%.

Volumes are the field kind ``volume`` (:data:`selfsup.fields.VOLUME`, ``(C, D, H, W)``): :class:`VolumeSource`
holds them in memory as :class:`~selfsup.data.sources.ArraySource` holds images (raw values, a pixel window,
the train split's mean and std), and the registered dataset ``volumes`` is the generated set (2,000 train, 500
test, 16^3, windowed at the 1st / 99th percentile of its train statistics, channel kind ``bands``). A folder
of NIfTI / DICOM / 4-D ``.npy`` volumes opens as a volume source too (:mod:`selfsup.data.folder`).
:func:`volume_slices` is the light alternative to 3-D models (``data.slices=true``): every depth slice of
every volume becomes a 2-D image with its volume's label, so every 2-D method and backbone trains on volumes.
"""
from __future__ import annotations

import functools

import numpy as np

from selfsup.data.pixels import PixelWindow
from selfsup.data.sources import DATASETS, ArraySource, DataError, DataSplits
from selfsup.data.stats import DatasetStats, compute_stats
from selfsup.fields import VOLUME_FIELDS

VOLUME_CLASSES = ["blobs", "tubes", "shells", "layers"]


def _volume_structure(kind: int, rng: np.random.Generator, m: int, grid: np.ndarray) -> np.ndarray:
    """(m, s, s, s) structure of one class in about [0, 1]; ``grid`` (3, s, s, s) voxel coordinates, centred."""
    size = grid.shape[1]
    points = grid.reshape(3, -1).T[None]  # (1, V, 3)
    out = np.zeros((m, points.shape[1]), np.float32)
    half = size / 2

    def objects(lo, hi):  # up to hi random centres well inside the volume, the first lo..hi of them in use
        count = rng.integers(lo, hi + 1, m)
        centre = rng.uniform(-0.6 * half, 0.6 * half, (hi, m, 3)).astype(np.float32)
        return [(centre[j], (j < count).astype(np.float32)[:, None]) for j in range(hi)]

    if kind == 0:  # blobs: a few Gaussian balls
        for c, used in objects(3, 6):
            r = rng.uniform(0.08, 0.18, (m, 1)).astype(np.float32) * size
            out = np.maximum(out, used * np.exp(-((points - c[:, None]) ** 2).sum(-1) / (2 * r ** 2)))
    elif kind == 1:  # tubes: straight cylinders through random points in random directions
        for c, used in objects(1, 3):
            direction = rng.standard_normal((m, 1, 3)).astype(np.float32)
            direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
            offset = points - c[:, None]
            along = (offset * direction).sum(-1, keepdims=True)
            d2 = ((offset - along * direction) ** 2).sum(-1)
            r = rng.uniform(0.06, 0.12, (m, 1)).astype(np.float32) * size
            out = np.maximum(out, used * np.exp(-d2 / (2 * r ** 2)))
    elif kind == 2:  # shells: hollow spheres
        for c, used in objects(1, 2):
            radius = rng.uniform(0.2, 0.4, (m, 1)).astype(np.float32) * size
            width = rng.uniform(0.04, 0.08, (m, 1)).astype(np.float32) * size
            dist = np.sqrt(((points - c[:, None]) ** 2).sum(-1))
            out = np.maximum(out, used * np.exp(-(dist - radius) ** 2 / (2 * width ** 2)))
    else:  # layers: parallel sheets along a random normal
        normal = rng.standard_normal((m, 1, 3)).astype(np.float32)
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        period = rng.uniform(0.2, 0.4, (m, 1)).astype(np.float32) * size
        phase = rng.uniform(0, 2 * np.pi, (m, 1)).astype(np.float32)
        wave = np.cos(2 * np.pi * (points * normal).sum(-1) / period + phase)
        out = np.clip((wave - 0.3) * 1.5, 0, 1)
    return out.reshape(m, size, size, size)


def generate_volumes(n: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic one-channel volumes: (volumes uint16 (n, 1, size, size, size), labels int64 (n,)).

    Labels index :data:`VOLUME_CLASSES` (blobs, tubes, shells, layers) and are balanced. Each volume's
    structure is standardized and then given a random mean (800-2,000), contrast, noise level and smooth
    multiplicative bias field, so mean intensity and contrast carry no class information; only the 3-D shape
    does. Deterministic for ``(n, seed, size)``."""
    n, seed, size = int(n), int(seed), int(size)
    if n < 0 or size < 4:
        raise ValueError(f"need n >= 0 and size >= 4, not n={n}, size={size}")
    labels = np.random.default_rng([seed, 2]).permutation(np.arange(n) % len(VOLUME_CLASSES)).astype(np.int64)
    grid = (np.mgrid[0:size, 0:size, 0:size].astype(np.float32) - (size - 1) / 2)
    volumes = np.empty((n, 1, size, size, size), np.uint16)
    chunk_size = max(1, (1 << 19) // size ** 3)  # ~0.5 M voxels per chunk
    for chunk, start in enumerate(range(0, n, chunk_size)):
        rng = np.random.default_rng([seed, 3, chunk])
        part = labels[start:start + chunk_size]
        m = len(part)
        structure = np.empty((m, size, size, size), np.float32)
        for c in range(len(VOLUME_CLASSES)):
            where = np.flatnonzero(part == c)
            if len(where):
                structure[where] = _volume_structure(c, rng, len(where), grid)
        structure -= structure.mean((1, 2, 3), keepdims=True)
        structure /= structure.std((1, 2, 3), keepdims=True) + 1e-6
        shape = (m, 1, 1, 1)
        mean = rng.uniform(800, 2000, shape)
        contrast = rng.uniform(150, 400, shape)
        noise = rng.uniform(0.3, 0.8, shape) * contrast
        direction = rng.standard_normal((m, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        # Bias field: a linear ramp of +-10% across the volume, as coil or illumination falloff.
        bias = 1 + 0.1 * np.einsum("mi,ixyz->mxyz", direction, grid / (size / 2))
        value = (mean + contrast * structure + noise * rng.standard_normal(structure.shape)) * bias
        volumes[start:start + m, 0] = np.clip(np.rint(value), 0, 65535).astype(np.uint16)
    return volumes, labels


class VolumeSource(ArraySource):
    """Volumes in an array ``(N, C, D, H, W)``, served as ``(C, D, H, W)`` values of the field kind ``volume``:
    everything else (raw dtypes and their window, ``mean``/``std``, labels, fingerprint) as
    :class:`~selfsup.data.sources.ArraySource`, whose 4-D behaviour this class leaves untouched."""

    fields = VOLUME_FIELDS
    array_ndim, array_layout = 5, "(N, C, D, H, W)"
    flips_preserve_labels = True  # the classes are shapes at random pose: any flip keeps them

    def __repr__(self) -> str:
        labelled = f", {len(self.classes)} classes" if self.classes is not None else ", unlabeled"
        return f"VolumeSource({self.name!r}, {tuple(self.images.shape)}, channels={self.channels}{labelled})"


@functools.lru_cache(maxsize=2)
def _volume_arrays(train: int, test: int, seed: int, size: int) -> tuple[dict, DatasetStats]:
    """Train and test volumes (generator seeds ``2 seed`` and ``2 seed + 1``) and the train split's statistics,
    computed once per process (both are deterministic)."""
    volumes, labels = generate_volumes(train, 2 * seed, size)
    test_volumes, test_labels = generate_volumes(test, 2 * seed + 1, size)
    stats = compute_stats(VolumeSource(volumes, window=PixelWindow.full_range(np.uint16, 1)), max_images=train)
    return {"volumes": volumes, "labels": labels, "test_volumes": test_volumes, "test_labels": test_labels}, stats


@DATASETS.register("volumes")
def open_volumes(channels: int | None = None, n_train: int = 2000, n_test: int = 500, seed: int = 0, size: int = 16,
                 clip: tuple[float, float] = (1.0, 99.0)) -> DataSplits:
    """The ``volumes`` dataset: one-channel uint16 :class:`VolumeSource` train and test splits of ``size``^3,
    channel kind ``bands``, windowed at the ``clip`` percentiles of the train split's statistics and normalised
    by the windowed train data's mean and std (as the ``spectral`` dataset)."""
    if channels not in (None, 1):
        raise DataError(f"the volumes dataset has one channel; leave data.channels unset or set it to 1, not {channels}")
    arrays, stats = _volume_arrays(int(n_train), int(n_test), int(seed), int(size))
    window, (mean, std) = stats.window(clip), stats.unit_mean_std(clip)
    common = dict(classes=VOLUME_CLASSES, window=window, mean=mean, std=std, channel_kind="bands")
    train = VolumeSource(arrays["volumes"], labels=arrays["labels"], name="volumes/train", **common)
    test = VolumeSource(arrays["test_volumes"], labels=arrays["test_labels"], name="volumes/test", **common)
    train.stats = stats
    return DataSplits(train=train, test=test)


def _slices_of(source: VolumeSource, name: str) -> ArraySource:
    volumes = source.images
    n, c, d, h, w = volumes.shape
    # (N, C, D, H, W) -> (N * D, C, H, W): the D slices of volume i are images i * D .. i * D + D - 1.
    images = np.ascontiguousarray(volumes.transpose(0, 2, 1, 3, 4).reshape(n * d, c, h, w))
    labels = None if source.labels is None else np.repeat(source.labels, d)
    out = ArraySource(images, labels=labels, classes=source.classes, name=name,
                      mean=getattr(source, "mean", None), std=getattr(source, "std", None),
                      window=source.window if source.raw else None, channel_kind=source.channel_kind)
    out.flips_preserve_labels = getattr(source, "flips_preserve_labels", True)
    return out


def volume_slices(splits: DataSplits) -> DataSplits:
    """``data.slices=true``: the splits of in-memory volumes as 2-D images, every depth slice of a volume one
    image with the volume's label and the volume's window and normalisation. Each split's slices come from its
    own volumes, so the held-out split stays held out by volume (no test volume lends a slice to training)."""
    def slices(source):
        if source is None:
            return None
        if not isinstance(source, VolumeSource):
            raise DataError(f"data.slices=true takes in-memory volumes (the volumes dataset, VolumeSource), not "
                            f"{type(source).__name__} {source.name}; leave data.slices unset for 2-D data, or "
                            "export a volume folder's slices as 2-D files")
        return _slices_of(source, f"{source.name}/slices")

    train, test = slices(splits.train), slices(splits.test)
    if hasattr(splits.train, "stats"):
        train.stats = splits.train.stats
    return DataSplits(train=train, test=test)
