"""Embedded tables: scikit-learn's bundled tabular datasets (no download; they ship inside scikit-learn), each
with a fixed stratified held-out quarter (seed 0).

- ``table-wine``: 178 wines, 13 chemical measurements, 3 cultivars (UCI Wine);
- ``table-breast-cancer``: 569 tumours, 30 cell-nucleus measurements, malignant / benign (UCI WDBC);
- ``table-digits``: 1,797 8x8 digits as 64 pixel-count features (0..16), 10 classes: the same glyphs as the
  embedded image ``digits``, here as columns, with no notion that they form a grid.

Demos, documented as such: small enough to pre-train on a CPU in seconds, and with the raw-feature and
gradient-boosting baselines beside every row (the ``gbdt`` protocol).
"""
from __future__ import annotations

import functools

from selfsup.data.sources import DATASETS, DataError, DataSplits
from selfsup.data.tables import table_splits

HOLDOUT = 0.25


@functools.lru_cache(maxsize=4)
def _bundled(loader_name: str) -> tuple[list[str], list[list], list[int], list[str]]:
    import sklearn.datasets  # a dependency; imported here because only these datasets use its loaders

    bunch = getattr(sklearn.datasets, loader_name)()
    names = [str(n) for n in getattr(bunch, "feature_names", [f"x{j}" for j in range(bunch.data.shape[1])])]
    return names, bunch.data.tolist(), bunch.target.tolist(), [str(t) for t in bunch.target_names]


def _open(loader_name: str, name: str, channels: int | None) -> DataSplits:
    if channels not in (None, 1):
        raise DataError(f"the {name} table has no channels; leave data.channels unset")
    names, rows, labels, class_names = _bundled(loader_name)
    splits = table_splits(names, rows, labels, name=name, seed=0, holdout_fraction=HOLDOUT)
    for source in (splits.train, splits.test):
        source.classes = class_names
    return splits


@DATASETS.register("table-wine")
def open_wine(channels: int | None = None) -> DataSplits:
    return _open("load_wine", "table-wine", channels)


@DATASETS.register("table-breast-cancer")
def open_breast_cancer(channels: int | None = None) -> DataSplits:
    return _open("load_breast_cancer", "table-breast-cancer", channels)


@DATASETS.register("table-digits")
def open_table_digits(channels: int | None = None) -> DataSplits:
    return _open("load_digits", "table-digits", channels)
