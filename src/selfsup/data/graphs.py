"""Graphs (the field kind ``graph``): a sample is a :class:`Graph`, node features and edges.

Two sources:

- :class:`GraphSource`: many small graphs, one sample each, with graph labels (graph-level tasks);
- :class:`NodeSource`: one large graph whose samples are its nodes, each served as its neighbourhood (the
  nodes within ``hops`` edges, at most ``max_nodes`` in breadth-first order) with the node itself as the
  ``root``: an encoder's feature of the sample is the root's embedding, so the node-level kNN and linear
  protocols are the feature protocols of every other kind (transductive, as GraphMAE evaluates: the held-out
  nodes' labels are hidden, their features and edges are not).

Files (:func:`open_graph_folder`): a folder with an edge list ``edges.csv`` / ``.txt`` / ``.tsv`` (two columns,
source and target node ids; an optional header) and a node-feature file ``nodes.csv`` (a header; the first
column the node id, numeric feature columns, optionally ``label`` and ``graph``). Nodes with a ``graph`` column
are many small graphs, labelled by ``graphs.csv`` (columns ``graph``, ``label``) when it exists; without it
the nodes form one graph and ``label`` labels them. Edges naming a node that ``nodes.csv`` lacks, or joining
two graphs, are skipped and listed in ``bad_files``. Features are standardised per column. Edges are
undirected (both directions kept). :func:`graphs_from_networkx` takes networkx graphs (networkx itself is
needed only by the caller that made them).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from selfsup.data.badfiles import check_bad_fraction
from selfsup.data.sources import DataError, DataSplits, _hash
from selfsup.data.splits import stratified_holdout
from selfsup.fields import GRAPH_FIELDS

EDGE_FILES = ("edges.csv", "edges.txt", "edges.tsv")
NODE_FILE, GRAPH_LABEL_FILE = "nodes.csv", "graphs.csv"


@dataclass
class Graph:
    x: torch.Tensor  # (V, D) float32 node features
    edge_index: torch.Tensor  # (2, E) int64, both directions of every undirected edge
    root: int = -1  # a node-level sample: the node it stands for
    node_mask: torch.Tensor | None = None  # (V,) bool: the nodes a view hid (GraphMAE), set by the graph views

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])


def undirected(edges: np.ndarray) -> np.ndarray:
    """(2, E) -> (2, E') with both directions, no self-loops, no duplicates."""
    edges = edges[:, edges[0] != edges[1]]
    both = np.concatenate([edges, edges[::-1]], axis=1)
    return np.unique(both, axis=1) if both.size else both.reshape(2, 0)


class GraphSource:
    """Many small graphs, optionally labelled."""

    fields = GRAPH_FIELDS
    channels = 1
    mean, std = (0.0,), (1.0,)
    flips_preserve_labels = True
    channel_kind = "bands"

    def __init__(self, graphs: list[Graph], labels: np.ndarray | None = None, classes: list[str] | None = None,
                 name: str = "graphs", bad_files=None):
        self.graphs, self.labels, self.classes, self.name = graphs, labels, classes, name
        self.bad_files = list(bad_files or [])

    @property
    def encoder_options(self) -> dict:
        return {"node_features": int(self.graphs[0].x.shape[1])}

    def __len__(self) -> int:
        return len(self.graphs)

    def get_image(self, index: int) -> Graph:
        return self.graphs[index]

    def take(self, indices, name: str) -> "GraphSource":
        labels = None if self.labels is None else self.labels[indices]
        return GraphSource([self.graphs[i] for i in indices], labels, self.classes, name)

    def fingerprint(self) -> str:
        labels = self.labels if self.labels is not None else np.zeros(0, dtype=np.int64)
        parts = [p for g in self.graphs for p in (g.x.numpy(), g.edge_index.numpy())]
        return _hash("graphs", labels, *parts)

    def __repr__(self) -> str:
        return f"GraphSource({self.name!r}, {len(self)} graphs)"


class NodeSource:
    """The nodes ``nodes`` of one graph, each sample its neighbourhood with the node as root."""

    fields = GRAPH_FIELDS
    channels = 1
    mean, std = (0.0,), (1.0,)
    flips_preserve_labels = True
    channel_kind = "bands"

    def __init__(self, x: np.ndarray, edges: np.ndarray, node_labels: np.ndarray | None, nodes: np.ndarray | None = None,
                 classes: list[str] | None = None, name: str = "nodes", hops: int = 2, max_nodes: int = 48,
                 bad_files=None):
        self.x, self.edges = np.ascontiguousarray(x, dtype=np.float32), edges
        self.node_labels, self.classes, self.name = node_labels, classes, name
        self.nodes = np.arange(len(x)) if nodes is None else np.asarray(nodes, dtype=np.int64)
        self.labels = None if node_labels is None else node_labels[self.nodes]
        self.hops, self.max_nodes, self.bad_files = hops, max_nodes, list(bad_files or [])
        order = np.argsort(edges[0], kind="stable")  # CSR adjacency: neighbours of v in sorted order
        self._targets = edges[1][order]
        self._starts = np.searchsorted(edges[0][order], np.arange(len(x) + 1))

    @property
    def encoder_options(self) -> dict:
        return {"node_features": int(self.x.shape[1])}

    def __len__(self) -> int:
        return len(self.nodes)

    def neighbourhood(self, node: int) -> list[int]:
        seen, frontier = [node], [node]
        members = {node}
        for _ in range(self.hops):
            nxt = []
            for v in frontier:
                for u in self._targets[self._starts[v]:self._starts[v + 1]].tolist():
                    if u not in members and len(seen) < self.max_nodes:
                        members.add(u)
                        seen.append(u)
                        nxt.append(u)
            frontier = nxt
        return seen

    def get_image(self, index: int) -> Graph:
        kept = np.array(self.neighbourhood(int(self.nodes[index])), dtype=np.int64)
        local = np.full(len(self.x), -1, dtype=np.int64)
        local[kept] = np.arange(len(kept))
        src, dst = local[self.edges[0]], local[self.edges[1]]
        inside = (src >= 0) & (dst >= 0)
        return Graph(torch.from_numpy(self.x[kept]), torch.from_numpy(np.stack([src[inside], dst[inside]])), root=0)

    def take(self, indices, name: str) -> "NodeSource":
        return NodeSource(self.x, self.edges, self.node_labels, self.nodes[indices], self.classes, name, self.hops,
                          self.max_nodes)

    def fingerprint(self) -> str:
        labels = self.labels if self.labels is not None else np.zeros(0, dtype=np.int64)
        return _hash("nodes", self.x, self.edges, self.nodes, labels, f"{self.hops},{self.max_nodes}")

    def __repr__(self) -> str:
        return f"NodeSource({self.name!r}, {len(self)} of {len(self.x)} nodes)"


def _label_ids(values: list[str]) -> tuple[np.ndarray, list[str]]:
    classes = sorted(set(values), key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in values], dtype=np.int64), classes


def _split(labels: np.ndarray | None, n: int, fraction: float, seed: int):
    if labels is None:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    return stratified_holdout(labels, fraction, seed)


def is_graph_folder(path: Path) -> bool:
    return path.is_dir() and (path / NODE_FILE).is_file() and any((path / e).is_file() for e in EDGE_FILES)


def _read_rows(path: Path) -> list[list[str]]:
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    dialect = "excel-tab" if path.suffix == ".tsv" else "excel"
    if path.suffix == ".txt":
        return [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [row for row in csv.reader(text.splitlines(), dialect=dialect) if row]


def open_graph_folder(path: str | os.PathLike, seed: int = 0, holdout_fraction: float = 0.2,
                      max_bad_fraction: float = 0.1, log=lambda message: None) -> DataSplits:
    """``edges.*`` + ``nodes.csv`` (+ ``graphs.csv``) as train and held-out graph or node sources."""
    root = Path(path)
    nodes = _read_rows(root / NODE_FILE)
    if len(nodes) < 2:
        raise DataError(f"{root / NODE_FILE}: needs a header and at least one node")
    header, nodes = [h.strip() for h in nodes[0]], nodes[1:]
    label_col = header.index("label") if "label" in header else None
    graph_col = header.index("graph") if "graph" in header else None
    feature_cols = [j for j in range(1, len(header)) if j not in (label_col, graph_col)]
    if not feature_cols:
        raise DataError(f"{root / NODE_FILE}: no feature columns (columns: id, features..., optional label, graph)")
    bad, ids, x, node_labels, node_graph = [], {}, [], [], []
    for number, row in enumerate(nodes, 2):
        try:
            if len(row) != len(header):
                raise ValueError(f"{len(row)} fields, the header has {len(header)}")
            features = [float(row[j]) for j in feature_cols]
        except ValueError as error:
            bad.append((f"{root / NODE_FILE}:{number}", str(error)))
            continue
        ids[row[0].strip()] = len(x)
        x.append(features)
        node_labels.append(row[label_col].strip() if label_col is not None else None)
        node_graph.append(row[graph_col].strip() if graph_col is not None else "")
    edge_file = next(root / e for e in EDGE_FILES if (root / e).is_file())
    edges, edge_rows = [], _read_rows(edge_file)
    for number, row in enumerate(edge_rows, 1):
        if len(row) < 2:
            bad.append((f"{edge_file}:{number}", "fewer than two node ids"))
            continue
        a, b = row[0].strip(), row[1].strip()
        if number == 1 and a not in ids and b not in ids and not a.lstrip("-").isdigit():
            continue  # a header line
        missing = [n for n in (a, b) if n not in ids]
        if missing:
            bad.append((f"{edge_file}:{number}", f"names node '{missing[0]}', which {NODE_FILE} does not have"))
        elif node_graph[ids[a]] != node_graph[ids[b]]:
            bad.append((f"{edge_file}:{number}", f"joins graphs '{node_graph[ids[a]]}' and '{node_graph[ids[b]]}'"))
        else:
            edges.append((ids[a], ids[b]))
    check_bad_fraction(bad, len(nodes) + len(edge_rows), f"in {root}", max_bad_fraction, entry="node or edge line",
                       problem="could not be used")
    if bad:
        log(f"{root}: skipped {len(bad)} bad node / edge line(s), e.g. {bad[0][0]}: {bad[0][1]}")
    features = np.array(x, dtype=np.float64)
    features = ((features - features.mean(0)) / np.where(features.std(0) > 1e-12, features.std(0), 1.0)).astype(np.float32)
    edge_array = undirected(np.array(edges, dtype=np.int64).reshape(-1, 2).T)
    if graph_col is None:
        return _node_splits(root, features, edge_array, node_labels, seed, holdout_fraction, bad)
    return _graph_splits(root, features, edge_array, node_graph, seed, holdout_fraction, bad)


def _node_splits(root, features, edges, node_labels, seed, fraction, bad) -> DataSplits:
    labelled = all(v not in (None, "") for v in node_labels)
    labels, classes = _label_ids(node_labels) if labelled else (None, None)
    source = NodeSource(features, edges, labels, classes=classes, name=root.name, bad_files=bad)
    keep, held = _split(labels, len(features), fraction, seed)
    if not len(held):
        return DataSplits(train=source, test=None)
    train = source.take(keep, f"{root.name}/train")
    train.bad_files = bad
    return DataSplits(train=train, test=source.take(held, f"{root.name}/holdout"))


def _graph_splits(root, features, edges, node_graph, seed, fraction, bad) -> DataSplits:
    names = sorted(set(node_graph))
    members = {g: np.array([i for i, n in enumerate(node_graph) if n == g]) for g in names}
    graphs = []
    for g in names:
        local = np.full(len(features), -1, dtype=np.int64)
        local[members[g]] = np.arange(len(members[g]))
        inside = (local[edges[0]] >= 0) & (local[edges[1]] >= 0)
        graphs.append(Graph(torch.from_numpy(features[members[g]]),
                            torch.from_numpy(np.stack([local[edges[0]][inside], local[edges[1]][inside]]))))
    labels = classes = None
    if (root / GRAPH_LABEL_FILE).is_file():
        table = {row[0].strip(): row[1].strip() for row in _read_rows(root / GRAPH_LABEL_FILE)[1:] if len(row) >= 2}
        unlabelled = [g for g in names if g not in table]
        if unlabelled:
            raise DataError(f"{root / GRAPH_LABEL_FILE}: no label for graph '{unlabelled[0]}' "
                            f"({len(unlabelled)} of {len(names)} unlabelled); label every graph or remove the file")
        labels, classes = _label_ids([table[g] for g in names])
    source = GraphSource(graphs, labels, classes, root.name, bad)
    keep, held = _split(labels, len(graphs), fraction, seed)
    if not len(held):
        return DataSplits(train=source, test=None)
    train = source.take(keep, f"{root.name}/train")
    train.bad_files = bad
    return DataSplits(train=train, test=source.take(held, f"{root.name}/holdout"))


def graphs_from_networkx(graphs: list, labels: list | None = None, feature_key: str = "x", name: str = "networkx",
                         holdout_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """networkx graphs (node attribute ``feature_key`` a feature vector; without it the node's degree) as graph
    splits, labelled by ``labels`` when given."""
    out = []
    for g in graphs:
        order = {n: i for i, n in enumerate(g.nodes)}
        feats = [np.atleast_1d(np.asarray(d.get(feature_key, [g.degree(n)]), dtype=np.float32)) for n, d in g.nodes(data=True)]
        edges = np.array([(order[a], order[b]) for a, b in g.edges], dtype=np.int64).reshape(-1, 2).T
        out.append(Graph(torch.from_numpy(np.stack(feats)), torch.from_numpy(undirected(edges))))
    ids, classes = _label_ids([str(v) for v in labels]) if labels is not None else (None, None)
    source = GraphSource(out, ids, classes, name)
    if ids is None:
        return DataSplits(train=source, test=None)
    keep, held = stratified_holdout(ids, holdout_fraction, seed)
    return DataSplits(train=source.take(keep, f"{name}/train"), test=source.take(held, f"{name}/holdout"))


__all__ = ["Graph", "GraphSource", "NodeSource", "graphs_from_networkx", "is_graph_folder", "open_graph_folder",
           "undirected"]
