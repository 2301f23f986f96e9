"""Images with per-pixel labels, for the dense probe (:mod:`selfsup.eval.protocols.dense`).

A source with dense labels carries ``masks``, a ``(N, H, W)`` integer array of class ids aligned with its images
(:data:`IGNORE` = 255 marks pixels without a label), and ``mask_classes``, the class names by id;
:func:`has_masks` is the test. Two ways in:

- ``digits-dense`` (registered, generated in seconds, no download): ``DIGITS_PER_IMAGE`` of the embedded digits'
  shapes (scikit-learn's 8x8 digits, :mod:`selfsup.data.digits`, train and test from disjoint handwriting) on
  a 48 x 48 canvas, light strokes on a dark, slightly noisy background, later digits drawn over earlier ones;
  each pixel's label is 0 (background) or 1 + the class of the digit whose strokes lie within ``LABEL_MARGIN``
  pixels of it (the digit's extent; the later digit where two overlap; 11 classes). The
  image-level label (for kNN and the linear probe) is the class of the digit with the most visible pixels.
- :func:`open_dense_folder`: a folder of images and a folder of label masks with the same file names (stems):
  masks are single-channel PNGs whose pixel values are class ids (255: no label). Images and masks are resized to
  one size (bilinear / nearest); unreadable pairs are skipped and listed in the sources' ``bad_files``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
import torch
import torch.nn.functional as F

from selfsup.data import digits
from selfsup.data.sources import DATASETS, ArraySource, DataError, DataSplits

IGNORE = 255
CANVAS = 48
DIGITS_PER_IMAGE = 3
DENSE_SEED = 20250301
LABEL_MARGIN = 2  # pixels around a digit's strokes that carry its label
_TILE = digits.SIZE  # each digit is rendered on a 32 px tile, then pasted onto the canvas
_STYLE = {"height": (12.0, 20.0), "background": 0.15, "contrast": 0.7, "noise": 0.08}
MASK_CLASSES = ["background", *digits.CLASSES]


def has_masks(source) -> bool:
    """Whether ``source`` carries per-pixel labels (``masks`` (N, H, W) aligned with its images)."""
    masks = getattr(source, "masks", None)
    return masks is not None and len(masks) == len(source)


def with_masks(source, masks: np.ndarray, classes: list[str]):
    """``source`` with per-pixel labels attached (checked against its length)."""
    masks = np.asarray(masks)
    if masks.ndim != 3 or len(masks) != len(source) or masks.dtype.kind not in "ui":
        raise DataError(f"{getattr(source, 'name', source)}: masks must be an integer array (N, H, W) with one mask "
                        f"per image ({len(source)}), got {masks.dtype} {masks.shape}")
    source.masks, source.mask_classes = masks, list(classes)
    return source


def _render_split(rng: np.random.Generator, shapes: np.ndarray, targets: np.ndarray, pool: np.ndarray, n: int):
    """(images uint8 (n, 3, CANVAS, CANVAS), masks uint8 (n, CANVAS, CANVAS), image labels (n,))."""
    count = n * DIGITS_PER_IMAGE
    ids = pool[rng.integers(0, len(pool), count)]
    coverage = digits._draw_masks(shapes[ids], **digits._draw_geometry(rng, count, _STYLE["height"])).numpy()
    offsets = rng.integers(0, CANVAS - _TILE + 1, (count, 2))
    # A digit's label covers its strokes and LABEL_MARGIN pixels around them (the object's extent, as segmentation
    # masks outline objects, rather than the 1-2 px strokes alone, which a stride-8 feature map cannot resolve).
    strokes = torch.from_numpy(coverage > 0.5).float()[:, None]
    region = (torch.nn.functional.max_pool2d(strokes, 2 * LABEL_MARGIN + 1, 1, LABEL_MARGIN)[:, 0] > 0).numpy()
    ink = np.zeros((n, CANVAS, CANVAS), np.float32)
    masks = np.zeros((n, CANVAS, CANVAS), np.uint8)
    for k in range(count):  # painter's order: a later digit covers an earlier one
        i, (top, left) = k // DIGITS_PER_IMAGE, offsets[k]
        tile = coverage[k]
        window = (i, slice(top, top + _TILE), slice(left, left + _TILE))
        ink[window] = ink[window] * (1 - tile) + tile
        masks[window] = np.where(region[k], 1 + targets[ids[k]], masks[window])
    noise = rng.standard_normal(ink.shape, dtype=np.float32) * _STYLE["noise"]
    gray = np.clip(_STYLE["background"] + _STYLE["contrast"] * ink + noise, 0, 1)
    images = np.round(gray * 255).astype(np.uint8)[:, None].repeat(3, axis=1)
    areas = np.stack([(masks == 1 + c).sum(axis=(1, 2)) for c in range(10)], axis=1)
    return images, masks, areas.argmax(axis=1).astype(np.int64)


@lru_cache(maxsize=2)
def make_dense_digits(n_train: int = 2000, n_test: int = 500, seed: int = DENSE_SEED) -> dict[str, np.ndarray]:
    """The arrays of ``digits-dense`` (cached, read-only): ``{split}_images``, ``{split}_masks``,
    ``{split}_labels`` for split in train / test; train and test digits come from disjoint source digits."""
    shapes, targets = digits._load_source_digits()
    train_pool, test_pool = digits._source_split(targets, digits.DIGITS_SEED)
    out = {}
    for split, rng, pool, n in zip(("train", "test"), (np.random.default_rng(s) for s in
                                                       np.random.SeedSequence(seed).spawn(2)),
                                   (train_pool, test_pool), (n_train, n_test)):
        out[f"{split}_images"], out[f"{split}_masks"], out[f"{split}_labels"] = _render_split(rng, shapes, targets,
                                                                                              pool, int(n))
    for array in out.values():
        array.setflags(write=False)
    return out


@DATASETS.register("digits-dense")
def open_dense_digits(channels: int = 3, n_train: int = 2000, n_test: int = 500, seed: int = DENSE_SEED) -> DataSplits:
    """``digits-dense``: several embedded digits per 48 px image with per-pixel labels (see the module doc)."""
    if channels not in (1, 3):
        raise DataError(f"digits-dense is RGB; channels (data.channels) must be 1 or 3, not {channels}")
    arrays = make_dense_digits(int(n_train), int(n_test), int(seed))
    train = arrays["train_images"].astype(np.float64) / 255
    mean, std = [float(train.mean())] * channels, [float(train.std())] * channels
    sources = {}
    for split in ("train", "test"):
        source = ArraySource(arrays[f"{split}_images"], channels=channels, labels=arrays[f"{split}_labels"],
                             classes=digits.CLASSES, name=f"digits-dense/{split}", mean=mean, std=std)
        source.flips_preserve_labels = False
        sources[split] = with_masks(source, arrays[f"{split}_masks"], MASK_CLASSES)
    return DataSplits(train=sources["train"], test=sources["test"])


def _pairs(images: Path, masks: Path) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    if not images.is_dir() or not masks.is_dir():
        raise DataError(f"dense data needs a folder of images and a folder of masks; {images if not images.is_dir() else masks} "
                        "is not a folder")
    by_stem = {p.stem: p for p in sorted(masks.iterdir()) if p.is_file()}
    pairs, missing = [], []
    for path in sorted(p for p in images.iterdir() if p.is_file()):
        if path.stem in by_stem:
            pairs.append((path, by_stem[path.stem]))
        else:
            missing.append((path.name, f"no mask named {path.stem}.* in {masks}"))
    return pairs, missing


def _read_pair(image_path: Path, mask_path: Path, size: int | None) -> tuple[np.ndarray, np.ndarray]:


    image = torch.from_numpy(np.array(Image.open(image_path).convert("RGB"))).permute(2, 0, 1)
    mask = np.asarray(Image.open(mask_path))
    if mask.ndim != 2:
        raise ValueError(f"the mask is {mask.shape}, not single-channel class ids")
    if mask.shape != tuple(image.shape[1:]):
        raise ValueError(f"the mask is {mask.shape[1]}x{mask.shape[0]} px, its image {image.shape[2]}x{image.shape[1]}")
    if size is not None and mask.shape != (size, size):
        image = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        mask = F.interpolate(torch.from_numpy(mask.astype(np.int64))[None, None].float(), size=(size, size),
                             mode="nearest")[0, 0].numpy()
    return image.numpy(), mask.astype(np.uint8)


def is_dense_folder(path: Path) -> bool:
    """A folder whose only sub-folders are ``images/`` and ``masks/``: images with per-pixel label masks."""
    if not path.is_dir():
        return False
    folders = {p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")}
    return folders == {"images", "masks"}


def open_dense_folder(images: str | Path, masks: str | Path, *, size: int | None = None, holdout_fraction: float = 0.2,
                      seed: int = 0, classes: list[str] | None = None) -> DataSplits:
    """Images and label masks of the same names as :class:`DataSplits` with ``masks`` (a random
    ``holdout_fraction`` is the test split). ``size``: the side both are resized to (None: the first image's
    size, which every image must then share). Image-level labels are each image's most frequent non-background,
    labelled class (class 0 is taken as background), for the image-level protocols."""
    pairs, bad = _pairs(Path(images), Path(masks))
    loaded = []
    for image_path, mask_path in pairs:
        try:
            image, mask = _read_pair(image_path, mask_path, size)
        except (OSError, ValueError) as error:
            bad.append((image_path.name, str(error)))
            continue
        if size is None:
            size = image.shape[-1] if image.shape[-1] == image.shape[-2] else None
            if size is None:
                raise DataError(f"{image_path}: {image.shape[-1]}x{image.shape[-2]} px is not square; give size= to "
                                "resize every image and mask to one square size")
        loaded.append((image, mask))
    if len(loaded) < 2:
        raise DataError(f"{images}: fewer than two readable image + mask pairs ({len(bad)} skipped: "
                        f"{'; '.join(f'{n}: {r}' for n, r in bad[:5])})")
    image_array = np.stack([i for i, _ in loaded])
    mask_array = np.stack([m for _, m in loaded])
    num_classes = int(mask_array[mask_array != IGNORE].max()) + 1
    names = classes or [f"class {c}" for c in range(num_classes)]
    counts = np.stack([((mask_array == c) & (c > 0)).sum(axis=(1, 2)) for c in range(num_classes)], axis=1)
    labels = counts.argmax(axis=1).astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(loaded))
    n_test = max(1, int(round(holdout_fraction * len(loaded))))
    splits = {}
    for split, ids in (("train", np.sort(order[n_test:])), ("test", np.sort(order[:n_test]))):
        source = ArraySource(image_array[ids], labels=labels[ids], name=f"{Path(images).name}/{split}")
        source.bad_files = list(bad)
        splits[split] = with_masks(source, mask_array[ids], names)
    return DataSplits(train=splits["train"], test=splits["test"])
