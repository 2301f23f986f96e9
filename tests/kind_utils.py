"""Tiny data and encoders of the non-image field kinds (tables, point clouds, graphs), for the tests parametrized
over the method registry (a method's ``field_kind`` says which) and the kinds' own tests."""
from __future__ import annotations

import functools

import numpy as np

from selfsup.backbones import build_backbone
from selfsup.data.graph_datasets import generate_sbm_graphs
from selfsup.data.graphs import GraphSource
from selfsup.data.point_shapes import generate_shapes
from selfsup.data.points import PointSource
from selfsup.data.tables import table_splits


def table_rows(n: int = 64, seed: int = 0) -> tuple[list[str], list[list], list[int]]:
    """Rows of 6 numeric and 2 categorical columns, one value missing in each; the class moves two numeric columns
    and one category."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    rows = []
    for y in labels:
        numbers = list(rng.standard_normal(6) + np.array([y, -y, 0, 0, 0, 0]) * 0.8)
        row = [f"{v:.4f}" for v in numbers] + [["red", "green", "blue"][(y + rng.integers(0, 2)) % 3],
                                               ["a", "b"][rng.integers(0, 2)]]
        row[int(rng.integers(0, 8))] = ""  # one missing value a row: a small batch's context surely meets some
        rows.append(row)
    return [f"n{j}" for j in range(6)] + ["colour", "letter"], rows, labels.tolist()


@functools.lru_cache(maxsize=None)
def tiny_kind_source(kind: str, n: int = 32):
    if kind == "table":
        names, rows, labels = table_rows(n)
        return table_splits(names, rows, labels, name="tiny-table", test_rows=[], test_labels=[]).train
    if kind == "points":
        clouds, labels = generate_shapes(max(1, n // 12 + 1), 0, points=64)
        return PointSource(clouds[:n], labels[:n], name="tiny-points")
    if kind == "graph":
        graphs, labels = generate_sbm_graphs(n, 0)
        return GraphSource(graphs, labels, name="tiny-graphs")
    raise ValueError(kind)


def tiny_kind_backbone(kind: str):
    source = tiny_kind_source(kind)
    if kind == "table":
        return build_backbone("table_transformer_tiny", 1, **source.encoder_options, embed_dim=32, depth=1,
                              num_heads=2, num_registers=1)
    if kind == "points":
        return build_backbone("point_transformer_tiny", 1, num_groups=8, group_size=8, embed_dim=32, depth=1,
                              num_heads=2, tokenizer_dim=16)
    return build_backbone("gin_small", 1, **source.encoder_options, hidden_dim=32, num_layers=2)
