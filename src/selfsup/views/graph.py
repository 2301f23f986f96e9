"""Views of graphs (the field kind ``graph``) and the block-diagonal batch of many small graphs.

A view (:class:`GraphViewSpec`) of a :class:`~selfsup.data.graphs.Graph` draws, from the sample's own
generator and in this order (You et al., "Graph Contrastive Learning with Augmentations", NeurIPS 2020, for
the first three):

1. a subgraph: ``subgraph_keep`` of the nodes reached breadth-first from a random start (the root of a
   node-level sample always stays, and starts the search);
2. edge dropping: each undirected edge removed with probability ``edge_drop_p`` (both directions together);
3. feature masking: each node's features zeroed with probability ``feature_mask_p``;
4. GraphMAE's node mask: ``node_mask_rate`` of the nodes (at least one) marked in ``node_mask`` for the method
   to replace by its mask token (Hou et al., KDD 2022).

:func:`collate_graphs` joins a batch into one :class:`GraphBatch`: node features stacked, edge indices shifted
by each graph's first node (a block-diagonal adjacency), ``graph`` the graph of every node and ``roots`` the
root node of every node-level sample. Evaluation inputs are the graphs unchanged.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from selfsup.data.graphs import Graph
from selfsup.views.kinds import KIND_PIPELINES, KindPipeline


@dataclass(frozen=True)
class GraphViewSpec:
    count: int = 2
    size: int | None = None  # unused: graph masks are drawn per node, in the view
    subgraph_keep: float = 1.0
    edge_drop_p: float = 0.0
    feature_mask_p: float = 0.0
    node_mask_rate: float = 0.0


@dataclass
class GraphBatch:
    x: torch.Tensor  # (V, D) the batch's nodes
    edge_index: torch.Tensor  # (2, E) into the batch's nodes
    graph: torch.Tensor  # (V,) the sample each node belongs to
    num_graphs: int
    roots: torch.Tensor | None = None  # (B,) node-level samples: the node each one stands for
    node_mask: torch.Tensor | None = None  # (V,) bool

    @property
    def shape(self) -> torch.Size:  # a batch of num_graphs samples, as evaluation checks its outputs
        return torch.Size([self.num_graphs])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device, non_blocking: bool = False) -> "GraphBatch":
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return GraphBatch(move(self.x), move(self.edge_index), move(self.graph), self.num_graphs, move(self.roots),
                          move(self.node_mask))


def _subgraph(graph: Graph, keep: float, gen: random.Random) -> list[int]:
    n = graph.num_nodes
    target = max(1, int(round(keep * n)))
    start = graph.root if graph.root >= 0 else gen.randrange(n)
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for a, b in graph.edge_index.T.tolist():
        neighbours[a].append(b)
    order, seen, frontier = [start], {start}, [start]
    while frontier and len(order) < target:
        nxt = []
        for v in frontier:
            for u in neighbours[v]:
                if u not in seen and len(order) < target:
                    seen.add(u)
                    order.append(u)
                    nxt.append(u)
        frontier = nxt
    return sorted(order, key=lambda v: (v != start, v))  # the start (the root) stays node 0 of a node sample


def make_graph_view(graph: Graph, spec: GraphViewSpec, size: int, gen: random.Random,
                    kind: str = "bands") -> tuple[Graph, torch.Tensor]:
    x, edges, root = graph.x, graph.edge_index, graph.root
    if spec.subgraph_keep < 1.0:
        kept = _subgraph(graph, spec.subgraph_keep, gen)
        local = torch.full((graph.num_nodes,), -1, dtype=torch.long)
        local[torch.tensor(kept)] = torch.arange(len(kept))
        inside = (local[edges[0]] >= 0) & (local[edges[1]] >= 0)
        x, edges = x[torch.tensor(kept)], local[edges[:, inside]]
        root = 0 if root >= 0 else -1
    if spec.edge_drop_p > 0 and edges.shape[1]:
        undirected = edges[0] < edges[1]
        pairs = edges[:, undirected]
        kept = torch.tensor([gen.random() >= spec.edge_drop_p for _ in range(pairs.shape[1])], dtype=torch.bool)
        pairs = pairs[:, kept]
        edges = torch.cat([pairs, pairs.flip(0)], dim=1)
    n = x.shape[0]
    if spec.feature_mask_p > 0:
        zeroed = torch.tensor([gen.random() < spec.feature_mask_p for _ in range(n)], dtype=torch.bool)
        x = torch.where(zeroed[:, None], torch.zeros_like(x), x)
    mask = None
    if spec.node_mask_rate > 0:
        count = max(1, int(round(spec.node_mask_rate * n)))
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.tensor(gen.sample(range(n), min(count, n)))] = True
    return Graph(x.float(), edges, root, mask), torch.zeros(0)


def collate_graphs(graphs: list[Graph]) -> GraphBatch:
    sizes = torch.tensor([g.num_nodes for g in graphs])
    starts = torch.cumsum(sizes, 0) - sizes
    edges = torch.cat([g.edge_index + s for g, s in zip(graphs, starts.tolist())], dim=1) if graphs else \
        torch.zeros(2, 0, dtype=torch.long)
    roots = starts + torch.tensor([max(g.root, 0) for g in graphs]) if graphs and graphs[0].root >= 0 else None
    masks = [g.node_mask for g in graphs]
    node_mask = torch.cat(masks) if masks and all(m is not None for m in masks) else None
    return GraphBatch(torch.cat([g.x for g in graphs]).float(), edges.long(),
                      torch.repeat_interleave(torch.arange(len(graphs)), sizes), len(graphs), roots, node_mask)


def raw_graph_features(graph: Graph) -> torch.Tensor:
    """The raw baseline: a node-level sample's own features; a graph's mean node features and its size."""
    if graph.root >= 0:
        return graph.x[graph.root].float()
    return torch.cat([graph.x.float().mean(0), torch.tensor([graph.num_nodes, graph.edge_index.shape[1] / 2.0])])


def default_graph_views(count: int) -> GraphViewSpec:
    """What joint-embedding methods get on graphs (GraphCL's recipe): subgraphs, edge dropping, masking."""
    return GraphViewSpec(count=count, subgraph_keep=0.8, edge_drop_p=0.2, feature_mask_p=0.2)


KIND_PIPELINES.add("graph", KindPipeline(make_view=make_graph_view, collate=collate_graphs,
                                         eval_input=lambda graph: graph, raw_features=raw_graph_features,
                                         default_views=default_graph_views,
                                         data_hint="a folder with edges.csv + nodes.csv or a graph-* dataset "
                                                   "(graph-sbm, graph-sbm-nodes)"))

__all__ = ["GraphBatch", "GraphViewSpec", "collate_graphs", "default_graph_views", "make_graph_view",
           "raw_graph_features"]
