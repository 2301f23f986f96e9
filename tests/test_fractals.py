"""Synthetic fractal pre-training data (selfsup.data.fractals): deterministic IFS images from a seed, no files."""
from __future__ import annotations

import torch

from selfsup.data import DATASETS, open_data
from selfsup.data.fractals import FractalSource, fractal_splits


def test_fractal_images_are_deterministic_and_differ_by_class():
    source = FractalSource(classes=4, count=12, size=32, seed=1)
    again = FractalSource(classes=4, count=12, size=32, seed=1)
    image = source.get_image(5)
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert torch.equal(image, again.get_image(5)) and source.fingerprint() == again.fingerprint()
    assert list(source.labels) == [i % 4 for i in range(12)]
    coverage = [(source.get_image(i).amax(0) > 0).float().mean().item() for i in range(12)]
    assert min(coverage) > 0.03  # something is drawn in every image
    assert not torch.equal(source.get_image(0), source.get_image(4))  # two instances of one class differ
    assert FractalSource(classes=4, count=12, size=32, seed=2).fingerprint() != source.fingerprint()


def test_fractal_datasets_are_registered_with_disjoint_splits():
    assert {"fractals", "fractals-multi"} <= set(DATASETS)
    splits = fractal_splits(classes=3, train=9, test=3, size=24, instances_per_image=(2, 4))
    assert splits.train.classes == splits.test.classes and len(splits.test) == 3
    assert not torch.equal(splits.train.get_image(0), splits.test.get_image(0))
    multi = open_data("fractals-multi").train
    assert len(multi) == 20000 and multi.get_image(3).shape == (3, 48, 48)
