"""The embedded demos written out as the files a user would have, for benchmarks/kinds.py's ``*-files`` rows:

- ``digits.csv``: scikit-learn's digits as a CSV (64 pixel-count columns ``x0``..``x63`` and ``label``);
- ``factors.csv``: the generated table-factors rows as a CSV (``x00``..``x63``, two of them categorical letters,
  and ``label``);
- ``sbm-nodes/``: the graph-sbm-nodes graph as an edge list ``edges.csv`` and a node-feature file ``nodes.csv``
  (``id``, 16 feature columns, ``label``);
- ``shapes-ply/<family>/<i>.ply``: every point-shapes cloud (train and held-out) as a binary little-endian PLY.

Each loader then makes its own stratified held-out split (``data.holdout_fraction``, 0.2), so these rows are not
on the embedded sets' splits: they show that the file path trains as well, not the same number.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from selfsup.data import open_data
from selfsup.data.table_datasets import generate_factor_table


def write_ply(path: Path, points: np.ndarray) -> None:
    """(N, 3) float32 points as a binary little-endian PLY (vertex x, y, z)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(points)}\n"
              "property float x\nproperty float y\nproperty float z\nend_header\n")
    path.write_bytes(header.encode() + np.ascontiguousarray(points, dtype="<f4").tobytes())


def write_table_csv(path: Path, names: list[str], rows: list[list], labels: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        out = csv.writer(file)
        out.writerow([*names, "label"])
        for row, label in zip(rows, labels):
            out.writerow([*row, label])
    return path


def write_digits_csv(path: Path) -> Path:
    import sklearn.datasets  # the benchmark's data; scikit-learn is a dependency

    digits = sklearn.datasets.load_digits()
    return write_table_csv(path, [f"x{j}" for j in range(digits.data.shape[1])], digits.data.astype(int).tolist(),
                           digits.target.tolist())


def write_factors_csv(path: Path) -> Path:
    names, rows, labels, _ = generate_factor_table()
    return write_table_csv(path, names, rows, labels)


def write_sbm_nodes_folder(root: Path) -> Path:
    train = open_data("graph-sbm-nodes").train  # a NodeSource over the whole graph: x, edges, node_labels
    root.mkdir(parents=True, exist_ok=True)
    with (root / "nodes.csv").open("w", newline="") as file:
        out = csv.writer(file)
        out.writerow(["id"] + [f"f{j}" for j in range(train.x.shape[1])] + ["label"])
        for node, (features, label) in enumerate(zip(train.x.tolist(), train.node_labels.tolist())):
            out.writerow([f"n{node}"] + [f"{v:.6g}" for v in features] + [label])
    with (root / "edges.csv").open("w", newline="") as file:
        out = csv.writer(file)
        out.writerow(["source", "target"])
        for a, b in train.edges.T.tolist():
            if a < b:  # an undirected edge once; the loader adds both directions
                out.writerow([f"n{a}", f"n{b}"])
    return root


def write_shapes_ply_folder(root: Path) -> Path:
    splits = open_data("point-shapes")
    for part in (splits.train, splits.test):
        for i, (cloud, label) in enumerate(zip(part.clouds, part.labels.tolist())):
            write_ply(root / part.classes[label] / f"{part.name.split('/')[-1]}-{i:04d}.ply", cloud)
    return root


WRITERS = {"digits.csv": write_digits_csv, "factors.csv": write_factors_csv, "sbm-nodes": write_sbm_nodes_folder,
           "shapes-ply": write_shapes_ply_folder}


def user_files(folder: Path, name: str) -> Path:
    """``folder/name`` written by its writer unless it is there already."""
    path = folder / name
    if not path.exists():
        WRITERS[name](path)
    return path
