"""Embedded tables: scikit-learn's bundled tabular datasets (no download; they ship inside scikit-learn), each
with a fixed stratified held-out quarter (seed 0).

- ``table-wine``: 178 wines, 13 chemical measurements, 3 cultivars (UCI Wine);
- ``table-breast-cancer``: 569 tumours, 30 cell-nucleus measurements, malignant / benign (UCI WDBC);
- ``table-digits``: 1,797 8x8 digits as 64 pixel-count features (0..16), 10 classes: the same glyphs as the
  embedded image ``digits``, here as columns, with no notion that they form a grid;
- ``table-factors``: generated (seed 0), 2,000 rows, 6 classes, 64 columns of which only 12 carry the class:
  each class is a cluster of 4 latent factors, and those 12 columns are noisy non-linear read-outs of the factors
  (so they predict one another), while the other 52 are independent heavy-tailed noise, and 2 of the 64 are
  categorical (a binned factor as a letter). The bundled tables sit at their ceiling (raw features, random-init
  encoders and GBDT all within a point or two); here the noise columns blur the raw features' neighbours (kNN@20
  73.6%, ~85% on the 12 alone), which is where predicting feature subsets from one another (T-JEPA) has something
  to find.

Demos, documented as such: small enough to pre-train on a CPU in seconds, and with the raw-feature and
gradient-boosting baselines beside every row (the ``gbdt`` protocol).
"""
from __future__ import annotations

import functools

import numpy as np

from selfsup.data.sources import DATASETS, DataError, DataSplits
from selfsup.data.tables import table_splits

HOLDOUT = 0.25


@functools.lru_cache(maxsize=4)
def _bundled(loader_name: str) -> tuple[list[str], list[list], list[int], list[str]]:
    import sklearn.datasets  # a dependency; imported here because only these datasets use its loaders

    bunch = getattr(sklearn.datasets, loader_name)()
    names = [str(n) for n in getattr(bunch, "feature_names", [f"x{j}" for j in range(bunch.data.shape[1])])]
    return names, bunch.data.tolist(), bunch.target.tolist(), [str(t) for t in bunch.target_names]


def _open(table: tuple[list[str], list[list], list[int], list[str]], name: str, channels: int | None) -> DataSplits:
    """Splits of (column names, rows, labels, class names)."""
    if channels not in (None, 1):
        raise DataError(f"the {name} table has no channels; leave data.channels unset")
    names, rows, labels, class_names = table
    splits = table_splits(names, rows, labels, name=name, seed=0, holdout_fraction=HOLDOUT)
    for source in (splits.train, splits.test):
        source.classes = class_names
    return splits


@DATASETS.register("table-wine")
def open_wine(channels: int | None = None) -> DataSplits:
    return _open(_bundled("load_wine"), "table-wine", channels)


@DATASETS.register("table-breast-cancer")
def open_breast_cancer(channels: int | None = None) -> DataSplits:
    return _open(_bundled("load_breast_cancer"), "table-breast-cancer", channels)


@DATASETS.register("table-digits")
def open_table_digits(channels: int | None = None) -> DataSplits:
    return _open(_bundled("load_digits"), "table-digits", channels)


FACTOR_ROWS, FACTOR_CLASSES, FACTOR_LATENTS, FACTOR_SIGNAL, FACTOR_NOISE = 2000, 6, 4, 12, 52


@functools.lru_cache(maxsize=1)
def generate_factor_table(seed: int = 0) -> tuple[list[str], list[list], list[int], list[str]]:
    """The ``table-factors`` rows: (column names, rows, labels, class names); see the module docstring."""
    rng = np.random.default_rng(seed)
    labels = np.arange(FACTOR_ROWS) % FACTOR_CLASSES
    rng.shuffle(labels)
    centres = 1.6 * rng.standard_normal((FACTOR_CLASSES, FACTOR_LATENTS))
    latents = centres[labels] + rng.standard_normal((FACTOR_ROWS, FACTOR_LATENTS))
    mixing = rng.standard_normal((FACTOR_LATENTS, FACTOR_SIGNAL)) / np.sqrt(FACTOR_LATENTS)
    signal = np.tanh(latents @ mixing + 0.3 * rng.standard_normal(FACTOR_SIGNAL))
    signal = signal + 0.3 * rng.standard_normal(signal.shape)
    noise = rng.standard_t(3, (FACTOR_ROWS, FACTOR_NOISE))
    columns = np.concatenate([signal, noise], axis=1)
    order = rng.permutation(columns.shape[1])  # no hint in the column order of which columns carry the class
    columns = columns[:, order]
    names = [f"x{j:02d}" for j in range(columns.shape[1])]
    rows = columns.round(4).tolist()
    # two categorical columns: one signal column and one noise column, binned into letters
    for j in (int(np.nonzero(order == 0)[0][0]), int(np.nonzero(order == FACTOR_SIGNAL)[0][0])):
        edges = np.quantile(columns[:, j], [0.25, 0.5, 0.75])
        for row, value in zip(rows, columns[:, j]):
            row[j] = "abcd"[int(np.searchsorted(edges, value))]
    return names, rows, labels.tolist(), [f"cluster {k}" for k in range(FACTOR_CLASSES)]


@DATASETS.register("table-factors")
def open_table_factors(channels: int | None = None) -> DataSplits:
    return _open(generate_factor_table(), "table-factors", channels)
