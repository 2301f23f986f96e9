"""Graph encoders (the field kind ``graph``) written with plain torch sparse operations: GIN and GCN layers over
the block-diagonal adjacency of a :class:`~selfsup.views.graph.GraphBatch`.

- GIN (Xu, Hu, Leskovec, Jegelka, "How Powerful are Graph Neural Networks?", ICLR 2019):
  ``h' = MLP((1 + eps) h + A h)``, ``eps`` learned, the sum over neighbours ``A h`` one sparse product;
- GCN (Kipf, Welling, "Semi-Supervised Classification with Graph Convolutional Networks", ICLR 2017):
  ``h' = D^-1/2 (A + I) D^-1/2 h W``, the normalised adjacency a sparse COO matrix.

Between layers a LayerNorm and ReLU. Pooled features: the root node's embedding for node-level samples
(:class:`~selfsup.data.graphs.NodeSource`), else the mean of every node's embedding per graph. The node
feature width comes from the data (``node_features``, the source's ``encoder_options``) and is kept in the
spec. ``forward_nodes(batch, x=None)`` returns every node's embedding (GraphMAE reads them, with its own
masked features ``x``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from selfsup.backbones.base import BACKBONES
from selfsup.config import ConfigError


def adjacency(edge_index: torch.Tensor, num_nodes: int, normalise: bool = False) -> torch.Tensor:
    """The (V, V) sparse COO adjacency of ``edge_index`` (2, E); ``normalise``: GCN's D^-1/2 (A + I) D^-1/2."""
    values = torch.ones(edge_index.shape[1], device=edge_index.device)
    if not normalise:
        return torch.sparse_coo_tensor(edge_index, values, (num_nodes, num_nodes), check_invariants=False).coalesce()
    loops = torch.arange(num_nodes, device=edge_index.device)
    index = torch.cat([edge_index, torch.stack([loops, loops])], dim=1)
    values = torch.cat([values, torch.ones(num_nodes, device=edge_index.device)])
    degree = torch.zeros(num_nodes, device=edge_index.device).index_add_(0, index[0], values)
    scale = degree.rsqrt()
    return torch.sparse_coo_tensor(index, values * scale[index[0]] * scale[index[1]], (num_nodes, num_nodes),
                                   check_invariants=False).coalesce()


def propagate(adj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``adj @ h`` as one sparse product, in float32 (sparse kernels have no bf16 backward on CPU; under autocast
    the result goes back to the dtype of ``h``)."""
    with torch.autocast(device_type=h.device.type, enabled=False):  # autocast would cast h back to bf16
        return torch.sparse.mm(adj, h.float()).to(h.dtype)


class GINLayer(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, learn_eps: bool = True):
        super().__init__()
        # GraphMAE's decoder sees zeros at its masked nodes, where a learned eps would get no gradient: fixed 0
        self.eps = nn.Parameter(torch.zeros(1)) if learn_eps else 0.0
        self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return self.mlp((1 + self.eps) * h + propagate(adj, h))


class GCNLayer(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, learn_eps: bool = True):  # (GIN's option; GCN has no eps)
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return propagate(adj, self.linear(h))


LAYERS = {"gin": GINLayer, "gcn": GCNLayer}


class GraphEncoder(nn.Module):
    field_kind = "graph"

    def __init__(self, name: str, in_channels: int = 1, node_features: int | None = None, layer: str = "gin",
                 hidden_dim: int = 64, num_layers: int = 3):
        super().__init__()
        if not node_features:
            raise ConfigError(f"config key 'backbone.name': {name} encodes graphs and takes its node-feature width "
                              "from the data (an edges + nodes folder or a graph-* dataset); train it on graph data")
        if layer not in LAYERS:
            raise ConfigError(f"config key 'backbone.options.layer': {layer!r} is not one of {', '.join(LAYERS)}")
        self.spec = {"name": name, "in_channels": int(in_channels), "node_features": int(node_features),
                     "layer": layer, "hidden_dim": hidden_dim, "num_layers": num_layers}
        dims = [int(node_features)] + [hidden_dim] * num_layers
        self.layers = nn.ModuleList(LAYERS[layer](a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(num_layers - 1))
        self.normalise = layer == "gcn"
        self.node_features, self.num_features = int(node_features), hidden_dim

    def forward_nodes(self, batch, x: torch.Tensor | None = None) -> torch.Tensor:
        """(V, hidden_dim): every node's embedding; ``x`` replaces the batch's node features (masked ones)."""
        h = batch.x if x is None else x
        adj = adjacency(batch.edge_index, h.shape[0], self.normalise)
        for i, layer in enumerate(self.layers):
            h = layer(h, adj)
            if i < len(self.norms):
                h = torch.relu(self.norms[i](h))
        return h

    def pool(self, batch, nodes: torch.Tensor) -> torch.Tensor:
        if batch.roots is not None:
            return nodes[batch.roots]
        sums = torch.zeros(batch.num_graphs, nodes.shape[1], device=nodes.device, dtype=nodes.dtype)
        sums = sums.index_add(0, batch.graph, nodes)
        counts = torch.bincount(batch.graph, minlength=batch.num_graphs).clamp(min=1)
        return sums / counts[:, None].to(nodes.dtype)

    def forward(self, batch) -> torch.Tensor:
        return self.pool(batch, self.forward_nodes(batch))


def _register(name: str, layer: str) -> None:
    @BACKBONES.register(name)
    def build(in_channels: int = 1, **options) -> GraphEncoder:
        return GraphEncoder(name, in_channels, **{"layer": layer, **options})

    build.field_kind = "graph"


_register("gin_small", "gin")
_register("gcn_small", "gcn")
