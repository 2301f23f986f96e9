"""Open a ``.npz`` file of image arrays (any number of channels, 8/16-bit or float).

Keys: ``images`` (required), ``labels``, ``test_images``, ``test_labels``, ``classes`` (all optional).
Image layouts: ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``; the channel axis of a 4-D array is the
smaller of axes 1 and 3 (axis 3 on a tie), so ``(N, 32, 32, 3)`` and ``(N, 13, 64, 64)`` both work.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from selfsup.data.pixels import PixelWindow
from selfsup.data.sources import ArraySource, DataError, DataSplits
from selfsup.data.splits import holdout_split

KNOWN_KEYS = ("images", "labels", "test_images", "test_labels", "classes")


def value_range(array: np.ndarray) -> tuple[float, float]:
    """(min, max) over the finite values (0, 0 when there are none)."""
    if array.dtype.kind == "f":
        finite = array[np.isfinite(array)]
        return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)


def to_uint8(array: np.ndarray, value_range_: tuple[float, float] | None = None) -> np.ndarray:
    """Scale an array to uint8 with one rule for the whole array (so that images stay comparable), decided by
    ``value_range_`` (default: the array's own finite min/max; pass the range over several arrays to scale
    them alike): uint8 as is; bool -> 0/255; integers within 0..255 as is, within 0..65535 by
    ``round(v * 255 / 65535)``; floats within [0, 1] by ``* 255``, within [0, 255] rounded; anything else
    rescaled from min..max. NaN/inf become 0."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind not in "iuf":
        raise DataError(f"image arrays must be numeric, got dtype {array.dtype}")
    lo, hi = value_range_ if value_range_ is not None else value_range(array)
    if array.dtype.kind in "iu" and lo >= 0 and hi <= 255:
        return array.astype(np.uint8)
    if array.dtype.kind in "iu" and lo >= 0 and hi <= 65535:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    a = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if array.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        a = a * 255.0
    elif not (array.dtype.kind == "f" and lo >= 0.0 and hi <= 255.0):
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def to_nchw(array: np.ndarray, key: str, source: str) -> np.ndarray:
    """(N,H,W) / (N,H,W,C) / (N,C,H,W) -> (N,C,H,W) (a view where possible)."""
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4:
        if array.shape[3] <= array.shape[1]:
            return array.transpose(0, 3, 1, 2)
        return array
    raise DataError(
        f"{source}: key '{key}' has shape {array.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)"
    )


def _labels(z, key: str, n: int, source: str) -> np.ndarray | None:
    if key not in z:
        return None
    labels = np.asarray(z[key])
    if labels.ndim != 1 or len(labels) != n:
        raise DataError(f"{source}: key '{key}' has shape {labels.shape}; expected ({n},), one label per image")
    return labels


def _to_indices(train: np.ndarray | None, test: np.ndarray | None, classes, source: str):
    """Map raw labels (integers or strings) to int64 class indices and the list of class names."""
    present = [lab for lab in (train, test) if lab is not None]
    if not present:
        return None, None, None
    if any(lab.dtype.kind in "US" for lab in present):  # string labels: classes are the sorted names
        names = sorted({str(x) for lab in present for x in lab.tolist()})
        if classes is not None:
            names = [str(c) for c in classes]
        index = {name: i for i, name in enumerate(names)}
        missing = sorted({str(x) for lab in present for x in lab.tolist()} - set(index))
        if missing:
            raise DataError(f"{source}: labels {missing[:5]} are not in key 'classes'")
        convert = lambda lab: None if lab is None else np.array([index[str(x)] for x in lab.tolist()], np.int64)
        return convert(train), convert(test), names
    out = []
    for key, lab in (("labels", train), ("test_labels", test)):
        if lab is None:
            out.append(None)
            continue
        if lab.dtype.kind not in "iufb":
            raise DataError(f"{source}: key '{key}' has dtype {lab.dtype}; use integers or strings")
        if lab.dtype.kind == "f" and not np.all(np.isfinite(lab) & (lab == np.round(lab))):
            raise DataError(f"{source}: key '{key}' holds non-integer values; labels must be class indices")
        lab = lab.astype(np.int64)
        if lab.size and lab.min() < 0:
            raise DataError(f"{source}: key '{key}' has negative labels (e.g. -1 for 'unlabeled'); store unlabeled "
                            "images without labels (drop the key) and labelled ones as class indices 0..K-1")
        out.append(lab)
    k = max((int(lab.max()) + 1 for lab in out if lab is not None and lab.size), default=0)
    if classes is None:
        names = [str(i) for i in range(k)]
    else:
        names = [str(c) for c in classes]
        if k > len(names):
            raise DataError(f"{source}: labels go up to {k - 1} but key 'classes' names only {len(names)} classes")
    return out[0], out[1], names


def open_npz(path: str | os.PathLike, channels: int | None = None, seed: int = 0, holdout_fraction: float = 0.2,
             pixels: str = "auto") -> DataSplits:
    """The splits of a ``.npz`` file. ``pixels``: ``"8bit"`` scales every array to uint8 (:func:`to_uint8`);
    ``"raw"`` keeps the arrays as they are (float [0, 1] through a pixel window, :mod:`selfsup.data.pixels`);
    ``"auto"`` keeps them raw unless they are uint8 pictures of 1 or 3 channels. ``channels`` None follows
    the data (3 for 8-bit pictures)."""
    path = Path(path)
    source = str(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {source} as a .npz file ({e}); save it with numpy.savez") from None
    with z:
        if "images" not in z.files:
            raise DataError(f"{source} has no key 'images' (keys: {', '.join(z.files) or 'none'}); "
                            "save the images as numpy.savez(path, images=..., labels=...)")
        unknown = [k for k in z.files if k not in KNOWN_KEYS]
        if unknown:
            warnings.warn(f"{source}: ignoring unknown keys {unknown}; known keys are {list(KNOWN_KEYS)}",
                          stacklevel=3)
        try:
            arrays = {k: z[k] for k in z.files if k in KNOWN_KEYS}
        except ValueError as e:  # object arrays need pickle, which we never load
            raise DataError(f"{source}: {e}; store class names as a string array, e.g. "
                            "np.array(names, dtype=str)") from None
    images = to_nchw(arrays["images"], "images", source)
    test_images = to_nchw(arrays["test_images"], "test_images", source) if "test_images" in arrays else None
    c = images.shape[1]
    if test_images is not None and test_images.shape[1] != c:
        raise DataError(f"{source}: key 'images' has {c} channels (shape {arrays['images'].shape}) but "
                        f"'test_images' has {test_images.shape[1]} (shape {arrays['test_images'].shape})")
    raw = pixels == "raw" or (pixels == "auto" and (images.dtype != np.uint8 or c not in (1, 3)))
    if channels is None:
        channels = c if raw else 3
    if channels != c and (raw or {channels, c} != {1, 3}):
        raise DataError(
            f"{source}: key 'images' has shape {arrays['images'].shape}, i.e. {c} channel(s), but channels={channels} "
            f"was asked for (only 1 <-> 3 can be converted); set channels (data.channels) to {c}"
        )
    if len(images) == 0:
        raise DataError(f"{source}: key 'images' holds no images (shape {arrays['images'].shape})")
    train_raw = _labels(arrays, "labels", len(images), source)
    test_raw = _labels(arrays, "test_labels", len(test_images), source) if test_images is not None else None
    if "test_labels" in arrays and test_images is None:
        raise DataError(f"{source}: key 'test_labels' given without 'test_images'")
    classes = arrays.get("classes")
    if classes is not None:
        classes = [str(x) for x in np.asarray(classes).reshape(-1).tolist()]
    train_labels, test_labels, class_names = _to_indices(train_raw, test_raw, classes, source)
    if raw:  # kept as they are; the pixel window comes from the statistics (selfsup.data.stats)
        if images.dtype.kind not in "uif":
            raise DataError(f"{source}: image arrays must be numeric, got dtype {images.dtype}")
        images_u8, test_u8 = images, test_images
    else:  # one scaling rule for both splits, so that a pixel value means the same thing in train and test
        ranges = [value_range(x) for x in (images, test_images) if x is not None]
        joint = (min(r[0] for r in ranges), max(r[1] for r in ranges))
        images_u8 = to_uint8(images, joint)
        test_u8 = to_uint8(test_images, joint) if test_images is not None else None
    name = path.stem
    window = PixelWindow.full_range(images_u8.dtype, c) if raw else None
    train = ArraySource(np.ascontiguousarray(images_u8), channels=channels, labels=train_labels,
                        classes=class_names if train_labels is not None else None, name=name, window=window)
    if test_u8 is None:
        return holdout_split(train, holdout_fraction, seed)
    if test_labels is None:
        warnings.warn(f"{source}: 'test_images' without 'test_labels' cannot be used for evaluation; not used",
                      stacklevel=3)
        return DataSplits(train=train, test=None)
    test = ArraySource(np.ascontiguousarray(test_u8), channels=channels, labels=test_labels, classes=class_names,
                       name=f"{name}/test", window=window)
    return DataSplits(train=train, test=test)
