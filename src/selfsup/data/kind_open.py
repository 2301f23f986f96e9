"""Which path holds a table, point clouds or a graph, and opening it (:func:`open_kind_data`, consulted by
:func:`selfsup.data.open_data` before the image layouts):

- a ``.csv`` / ``.parquet`` file without an image column: a table (:mod:`selfsup.data.tables`; one with an
  image column stays an image-text manifest);
- a folder whose files are mostly ``.npy`` / ``.ply`` / ``.xyz``: point clouds (:mod:`selfsup.data.points`);
- a folder holding ``edges.csv`` (or ``.txt`` / ``.tsv``) and ``nodes.csv``: a graph, or many small ones
  (:mod:`selfsup.data.graphs`).
"""
from __future__ import annotations

from pathlib import Path

from selfsup.data.graphs import is_graph_folder, open_graph_folder
from selfsup.data.points import is_point_folder, open_point_folder
from selfsup.data.sources import DataSplits
from selfsup.data.tables import is_table_file, open_table


def open_kind_data(path: Path, label_column: str | None, seed: int, holdout_fraction: float,
                   max_bad_fraction: float, log) -> DataSplits | None:
    """The splits of ``path`` when it holds one of these kinds, else None (the image layouts then apply)."""
    if path.is_file() and is_table_file(path):
        return open_table(path, label_column, seed, holdout_fraction, max_bad_fraction, log)
    if is_graph_folder(path):
        return open_graph_folder(path, seed, holdout_fraction, max_bad_fraction, log)
    if is_point_folder(path):
        return open_point_folder(path, seed, holdout_fraction, max_bad_fraction, log)
    return None
