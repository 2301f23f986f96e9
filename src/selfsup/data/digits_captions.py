"""``digits-captions``: the embedded noisy digits as image-text pairs (no download), for CLIP-style methods.

The images are those of ``digits`` (the same renderer and seed; 5,000 train images instead of 1,000, and the
same 1,000 test images), each with 4-6 captions written from what is known about it: the digit (numeral and
word), its size (small / medium-sized / large: the rendered height in thirds of its range), its position (the
centre's column and row: left of x=13, right of x=19, in between the centre; the same for top / bottom) and
its slant (how far the top leans right of the bottom: rotation minus shear, upright within +-0.12), in
several phrasings ("a handwritten 3", "the digit three, large, near the top left", "a small left-leaning 3
in the bottom right corner", ...). The captions are deterministic for a seed, train and test alike.

The sources carry what zero-shot evaluation reads: ``class_words`` ("zero" .. "nine", index-aligned with
``classes`` "0" .. "9") and ``zero_shot_templates`` (prompts with one ``{}`` for a class's name or word).
Positions and slants are in the captions, so mirrored views would contradict them: ``flips_preserve_labels``
is False, as for ``digits`` (``data.hflip`` is off by default).
"""
from __future__ import annotations

import numpy as np

from selfsup.data.digits import CLASSES, DIGITS_SEED, SIZE, STYLES, make_digits, open_digits
from selfsup.data.sources import DATASETS, ArraySource, DataError, DataSplits

N_TRAIN = 5000
CLASS_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ZERO_SHOT_TEMPLATES = ["a handwritten {}.", "the digit {}.", "a photo of the number {}.",
                       "a noisy picture of the digit {}."]
CAPTIONS_PER_IMAGE = (4, 6)  # inclusive
_CENTRE_BAND = (SIZE / 2 - 3, SIZE / 2 + 3)  # pixels: a centre below is left / top, above is right / bottom
_UPRIGHT = 0.12  # |theta - shear| within this: upright
_COLUMNS, _ROWS = ("left", "centre", "right"), ("top", "middle", "bottom")

# Every template names the digit ({n}: numeral, {word}: its name); the others describe the geometry.
TEMPLATES = (
    "a handwritten {n}",
    "the digit {word}",
    "the digit {word}, {size}, near the {where}",
    "a {size} {slant_adj} {n} {in_where}",
    "a {size} handwritten {word} {in_where}",
    "the number {word}, {slant}",
    "{n}: a {size} digit, {slant}, near the {where}",
    "a noisy gray picture of the digit {n}",
    "{a_slant_adj} handwritten {word}",
    "a {size} {n} on a dark noisy background",
)


def _where(column: int, row: int) -> tuple[str, str]:
    """(name, phrase) of a position on a 3x3 grid: ("top left", "in the top left corner"), ("centre", ...)."""
    col, row_name = _COLUMNS[column], _ROWS[row]
    if column == 1 and row == 1:
        return "centre", "in the centre"
    if column == 1:
        return row_name, f"at the {row_name}"
    if row == 1:
        return col, f"on the {col}"
    return f"{row_name} {col}", f"in the {row_name} {col} corner"


def describe(label: int, height: float, centre_x: float, centre_y: float, theta: float, shear: float) -> dict:
    """The words of one image's captions (the template fields of :data:`TEMPLATES`)."""
    low, high = STYLES["noisy"]["height"]
    third = (high - low) / 3
    size = "small" if height < low + third else "large" if height > high - third else "medium-sized"
    where, in_where = _where(int(np.digitize(centre_x, _CENTRE_BAND)), int(np.digitize(centre_y, _CENTRE_BAND)))
    lean = theta - shear  # > 0: the top leans right of the bottom (see digits.GEOMETRY_KEYS)
    slant, slant_adj = ("upright", "upright") if abs(lean) <= _UPRIGHT else \
        ("slanted to the right", "right-leaning") if lean > 0 else ("slanted to the left", "left-leaning")
    article = "an" if slant_adj[0] in "aeiou" else "a"
    return {"n": str(label), "word": CLASS_WORDS[label], "size": size, "where": where, "in_where": in_where,
            "slant": slant, "slant_adj": slant_adj, "a_slant_adj": f"{article} {slant_adj}"}


def make_captions(arrays: dict[str, np.ndarray], split: str, seed: int) -> list[list[str]]:
    """4-6 captions per image of ``split`` of :func:`make_digits`' arrays, deterministic given ``seed``."""
    rng = np.random.default_rng([seed, 11, ("train", "test").index(split)])
    labels = arrays[f"{split}_labels"]
    counts = rng.integers(CAPTIONS_PER_IMAGE[0], CAPTIONS_PER_IMAGE[1] + 1, len(labels))
    order = rng.permuted(np.tile(np.arange(len(TEMPLATES)), (len(labels), 1)), axis=1)
    geometry = [arrays[f"{split}_{key}"] for key in ("height", "centre_x", "centre_y", "theta", "shear")]
    captions = []
    for i, label in enumerate(labels):
        words = describe(int(label), *(float(g[i]) for g in geometry))
        captions.append([TEMPLATES[t].format(**words) for t in order[i, :counts[i]]])
    return captions


@DATASETS.register("digits-captions")
def open_digits_captions(channels: int = 3, n_train: int = N_TRAIN, n_test: int = 1000,
                         seed: int = DIGITS_SEED) -> DataSplits:
    """``digits-captions`` as :class:`DataSplits` of two captioned :class:`ArraySource` (10 classes, 32x32;
    ``get_text(i)`` gives image i's captions). See the module docstring."""
    if channels not in (1, 3):
        raise DataError(f"the digits dataset is RGB; channels (data.channels) must be 1 or 3, not {channels}")
    images = open_digits(channels, n_train=n_train, n_test=n_test, seed=seed)  # the images, labels and stats
    arrays = make_digits(int(n_train), int(n_test), int(seed), "noisy")  # the same cached arrays, with geometry
    sources = {}
    for split, plain in (("train", images.train), ("test", images.test)):
        source = ArraySource(plain.images, channels=channels, labels=plain.labels, classes=CLASSES,
                             name=f"digits-captions/{split}", mean=plain.mean, std=plain.std,
                             captions=make_captions(arrays, split, int(seed)))
        source.source_ids = plain.source_ids
        source.flips_preserve_labels = False  # positions and slants are in the captions (and a mirrored 2 is no 2)
        source.class_words = list(CLASS_WORDS)
        source.zero_shot_templates = list(ZERO_SHOT_TEMPLATES)
        sources[split] = source
    return DataSplits(train=sources["train"], test=sources["test"])
