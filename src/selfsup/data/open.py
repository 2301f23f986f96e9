"""``open_data(spec)``: one entry point for every kind of data (registered name, folder of images, ``.npz``
file; image-text pairs as a caption manifest, a folder with ``.txt`` sidecars, or tar shards)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from selfsup.data.arrays import open_npz
from selfsup.data.captions import MANIFEST_SUFFIXES, open_manifest
from selfsup.data.folder import IMAGE_EXTENSIONS, open_folder
from selfsup.data.dense import is_dense_folder, open_dense_folder
from selfsup.data.media import open_media_folder
from selfsup.data.kind_open import open_kind_data
from selfsup.data.shards import SHARD_SUFFIX, open_shards, shard_paths
from selfsup.data.sources import DATASETS, DataError, DataSplits
from selfsup.data.stats import window_raw_splits
from selfsup.data.stream import is_url, open_stream
from selfsup.registry import did_you_mean


def _unknown(spec: str) -> DataError:
    hint = did_you_mean(spec, DATASETS, cutoff=0.5)
    return DataError(
        f"data.source '{spec}' is neither a registered dataset nor an existing path.{hint} Registered datasets: "
        f"{', '.join(sorted(DATASETS))}. A folder of images (extensions {', '.join(IMAGE_EXTENSIONS)}, optionally "
        "with class sub-folders and train/ + test/ or val/ split folders, and <stem>.txt caption sidecars), a .npz "
        "file (keys 'images', optional 'labels', 'test_images', 'test_labels', 'classes'), an image-text manifest "
        "(.csv, .jsonl, .parquet: columns image, caption, optional label, split) or tar shards (a folder of .tar) "
        "are also accepted; streamed shards are given by their index.json (a path or an fsspec URL)."
    )


def open_data(spec: str | os.PathLike, channels: int | None = None, max_bad_fraction: float = 0.1, seed: int = 0,
              holdout_fraction: float = 0.2, pixels: str = "auto", stats: str | os.PathLike | None = None,
              clip_percentiles: tuple[float, float] | None = (1.0, 99.0), log=lambda message: None,
              label_column: str | None = None, image_size: int | None = None) -> DataSplits:
    """Open ``spec``: a name in :data:`DATASETS`, a folder of images (with ``.txt`` caption sidecars: image-text
    pairs), a folder of ``.tar`` shards or one (:mod:`selfsup.data.shards`), a ``.npz`` file, or an image-text
    manifest (``.csv``, ``.jsonl``, ``.parquet``; :mod:`selfsup.data.captions`).

    A registered name wins over a same-named folder in the working directory (write ``./digits`` for the
    folder). Labelled data without its own test split gets a stratified held-out test split of
    ``holdout_fraction`` drawn from ``seed`` (pre-training then uses only the rest); unlabeled data has
    ``test=None``, unless it is image-text pairs: then a random ``holdout_fraction`` of the pairs is the test
    split (labels None), for image-text retrieval. See :mod:`selfsup.data.folder` and
    :mod:`selfsup.data.arrays` for the layouts.

    ``channels`` None follows the data (3 for 8-bit pictures, the band count of raw data). Raw domain folders
    (``pixels``, :mod:`selfsup.data.folder`) get their pixel window and normalisation from ``stats`` (a file of
    ``selfsup data stats``), the folder's own statistics file, or statistics computed now
    (:func:`selfsup.data.stats.window_raw_splits`), clipped at ``clip_percentiles``. A folder holding only
    ``images/`` and ``masks/`` is images with per-pixel labels (:mod:`selfsup.data.dense`), resized to
    ``image_size`` (None: they must share one square size).
    """
    if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
        raise DataError(f"channels (data.channels) must be a positive integer, not {channels!r}")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise DataError(f"data.max_bad_fraction must lie in [0, 1], not {max_bad_fraction}")
    if not 0.0 <= holdout_fraction < 1.0:
        raise DataError(f"data.holdout_fraction must lie in [0, 1), not {holdout_fraction}")
    text = os.fspath(spec)
    if text in DATASETS and not isinstance(spec, Path):
        if os.path.exists(text):
            warnings.warn(f"'{text}' is a registered dataset and also a path here; using the registered dataset "
                          f"(write './{text}' for the path)", stacklevel=2)
        opener = DATASETS.get(text)
        return opener() if channels is None else opener(channels=channels)  # None: the dataset's own channels
    if is_url(text):  # streamed shards behind a URL: their index.json (selfsup.data.stream)
        return open_stream(text, channels)
    path = Path(os.path.expanduser(text))
    if path.is_file() and path.suffix.lower() == ".json":  # a shard index: streamed shards
        return open_stream(str(path), channels)
    kind_splits = open_kind_data(path, label_column, seed, holdout_fraction, max_bad_fraction, log)
    if kind_splits is not None:  # a table, a folder of point clouds, a graph (selfsup.data.kind_open)
        return kind_splits
    if path.is_dir():
        if shard_paths(path):  # .tar files in it: a folder of shards
            return open_shards(path, channels or 3, max_bad_fraction, seed, holdout_fraction)
        if is_dense_folder(path):  # images/ + masks/ of the same names: per-pixel labels (selfsup.data.dense)
            return open_dense_folder(path / "images", path / "masks", size=image_size,
                                     holdout_fraction=holdout_fraction, seed=seed)
        media = open_media_folder(path, max_bad_fraction, seed, holdout_fraction)  # sounds or videos
        if media is not None:
            return media
        splits = open_folder(path, channels, max_bad_fraction, seed, holdout_fraction, pixels)
        return window_raw_splits(splits, stats, clip_percentiles, data_path=path, log=log)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            splits = open_npz(path, channels, seed, holdout_fraction, pixels)
            return window_raw_splits(splits, stats, clip_percentiles, data_path=path, log=log)
        if suffix in MANIFEST_SUFFIXES:
            return open_manifest(path, channels or 3, max_bad_fraction, seed, holdout_fraction)
        if suffix == SHARD_SUFFIX:
            return open_shards(path, channels or 3, max_bad_fraction, seed, holdout_fraction)
        raise DataError(f"{path} is a file but not a .npz file, an image-text manifest "
                        f"({', '.join(MANIFEST_SUFFIXES)}) or a {SHARD_SUFFIX} shard; give a folder of images, one "
                        f"of those files or one of the registered datasets ({', '.join(sorted(DATASETS))})")
    if path.exists():
        raise DataError(f"{path} is neither a folder nor a regular file")
    if os.sep in text or "/" in text or path.suffix:  # meant as a path
        raise DataError(f"data.source '{text}': no such folder or file ({path.resolve()}); check the path, or use "
                        f"a registered dataset ({', '.join(sorted(DATASETS))})")
    raise _unknown(text)
