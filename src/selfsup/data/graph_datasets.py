"""Embedded graphs, demos documented as such (generated from fixed seeds, no download):

- ``graph-sbm``: 600 training and 200 held-out small graphs (20-40 nodes) from stochastic block models with
  1, 2, 3 or 4 blocks (the class; Holland, Laskey, Leinhardt 1983), edge probabilities 0.5 within a block and
  0.04 between blocks (so the density, too, tells the classes apart). Node features (8) are the node's block centre
  (drawn per graph) plus noise: a graph's class is in how its features cluster along its edges.
- ``graph-sbm-nodes``: node classification on one 900-node stochastic block model of 6 blocks (the class),
  edge probabilities 0.04 / 0.004; node features (16) carry a weak block signal under strong noise, so
  neighbourhoods tell more than a node's own features. A stratified quarter of the nodes is held out
  (transductive: their labels are hidden, their features and edges are not).
- ``graph-karate``: Zachary's karate club (34 members, 2 factions) through networkx, the classic small real
  graph (node degree and a constant as features); needs networkx (the ``graphs`` extra).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from selfsup.data.graphs import Graph, GraphSource, NodeSource, undirected
from selfsup.data.sources import DATASETS, DataError, DataSplits
from selfsup.data.splits import stratified_holdout


def _sbm_edges(blocks: np.ndarray, p_in: float, p_out: float, rng) -> np.ndarray:
    same = blocks[:, None] == blocks[None, :]
    draw = rng.random(same.shape) < np.where(same, p_in, p_out)
    upper = np.triu(draw, 1)
    return undirected(np.stack(np.nonzero(upper)).astype(np.int64))


def generate_sbm_graphs(count: int, seed: int, features: int = 8) -> tuple[list[Graph], np.ndarray]:
    rng = np.random.default_rng(seed)
    graphs, labels = [], []
    for i in range(count):
        k = i % 4 + 1
        n = int(rng.integers(20, 41))
        blocks = rng.integers(0, k, n)
        edges = _sbm_edges(blocks, 0.5, 0.04, rng)
        centres = rng.standard_normal((k, features))
        x = centres[blocks] + 0.5 * rng.standard_normal((n, features))
        graphs.append(Graph(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(edges)))
        labels.append(k - 1)
    return graphs, np.array(labels, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def _sbm_graph_splits():
    return generate_sbm_graphs(600, 0), generate_sbm_graphs(200, 1)


@DATASETS.register("graph-sbm")
def open_graph_sbm(channels: int | None = None) -> DataSplits:
    if channels not in (None, 1):
        raise DataError("graphs have no channels; leave data.channels unset")
    (train, train_y), (test, test_y) = _sbm_graph_splits()
    classes = ["1 block", "2 blocks", "3 blocks", "4 blocks"]
    return DataSplits(train=GraphSource(train, train_y, classes, "graph-sbm/train"),
                      test=GraphSource(test, test_y, classes, "graph-sbm/test"))


@functools.lru_cache(maxsize=1)
def _sbm_nodes():
    rng = np.random.default_rng(0)
    blocks = np.repeat(np.arange(6), 150)
    edges = _sbm_edges(blocks, 0.04, 0.004, rng)
    signal = rng.standard_normal((6, 16))
    x = (0.4 * signal[blocks] + rng.standard_normal((len(blocks), 16))).astype(np.float32)
    return x, edges, blocks.astype(np.int64)


@DATASETS.register("graph-sbm-nodes")
def open_graph_sbm_nodes(channels: int | None = None) -> DataSplits:
    if channels not in (None, 1):
        raise DataError("graphs have no channels; leave data.channels unset")
    x, edges, labels = _sbm_nodes()
    source = NodeSource(x, edges, labels, classes=[f"block {b}" for b in range(6)], name="graph-sbm-nodes")
    keep, held = stratified_holdout(labels, 0.25, 0)
    return DataSplits(train=source.take(keep, "graph-sbm-nodes/train"),
                      test=source.take(held, "graph-sbm-nodes/holdout"))


@DATASETS.register("graph-karate")
def open_graph_karate(channels: int | None = None) -> DataSplits:
    try:  # optional: only this demo needs networkx
        import networkx as nx
    except ImportError:
        raise DataError("the graph-karate dataset needs networkx: install the graphs extra "
                        "(pip install 'selfsup[graphs]')") from None
    graph = nx.karate_club_graph()
    degree = np.array([graph.degree(n) for n in graph.nodes], dtype=np.float32)
    x = np.stack([np.ones_like(degree), (degree - degree.mean()) / degree.std()], axis=1)
    edges = undirected(np.array(list(graph.edges), dtype=np.int64).T)
    labels = np.array([0 if graph.nodes[n]["club"] == "Mr. Hi" else 1 for n in graph.nodes], dtype=np.int64)
    source = NodeSource(x, edges, labels, classes=["Mr. Hi", "Officer"], name="graph-karate")
    keep, held = stratified_holdout(labels, 0.3, 0)
    return DataSplits(train=source.take(keep, "graph-karate/train"), test=source.take(held, "graph-karate/holdout"))
