"""Graphs: GIN and GCN layers against dense-adjacency references, the block-diagonal batch, the views, the
files (an edge list naming missing nodes reported and skipped), networkx graphs and node-level samples."""
import random

import numpy as np
import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.backbones.gnn import GCNLayer, GINLayer, adjacency
from selfsup.data import open_data
from selfsup.data.graphs import Graph, NodeSource, graphs_from_networkx, undirected
from selfsup.views.graph import GraphViewSpec, collate_graphs, make_graph_view


def random_graph(n, d, seed, p=0.3):
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((n, n)) < p, 1)
    return Graph(torch.from_numpy(rng.standard_normal((n, d)).astype(np.float32)),
                 torch.from_numpy(undirected(np.stack(np.nonzero(upper)).astype(np.int64))))


def dense(edge_index, n):
    a = torch.zeros(n, n)
    a[edge_index[0], edge_index[1]] = 1.0
    return a


def test_gin_and_gcn_layers_match_dense_adjacency_references():
    torch.manual_seed(0)
    batch = collate_graphs([random_graph(7, 4, 0), random_graph(5, 4, 1)])
    a = dense(batch.edge_index, 12)
    gin = GINLayer(4, 8)
    with torch.no_grad():
        gin.eps.fill_(0.3)
    expected = gin.mlp(1.3 * batch.x + a @ batch.x)
    assert torch.allclose(gin(batch.x, adjacency(batch.edge_index, 12)), expected, atol=1e-5)
    gcn = GCNLayer(4, 8)
    a_hat = a + torch.eye(12)
    d = a_hat.sum(1).rsqrt()
    expected = (d[:, None] * a_hat * d[None]) @ gcn.linear(batch.x)
    assert torch.allclose(gcn(batch.x, adjacency(batch.edge_index, 12, normalise=True)), expected, atol=1e-5)


def test_a_batch_is_block_diagonal_and_pools_per_graph():
    graphs = [random_graph(6, 3, 2), random_graph(4, 3, 3)]
    batch = collate_graphs(graphs)
    a = dense(batch.edge_index, 10)
    assert a[:6, 6:].sum() == 0 and a[6:, :6].sum() == 0  # no edge between the two graphs
    assert torch.equal(a[:6, :6], dense(graphs[0].edge_index, 6)) and batch.graph.tolist() == [0] * 6 + [1] * 4
    torch.manual_seed(0)
    encoder = build_backbone("gin_small", 1, node_features=3, hidden_dim=16, num_layers=2).eval()
    with torch.no_grad():
        together = encoder(batch)
        apart = torch.cat([encoder(collate_graphs([g])) for g in graphs])
    assert together.shape == (2, 16) and torch.allclose(together, apart, atol=1e-5)


def test_views_drop_edges_mask_features_and_keep_the_root():
    graph = random_graph(20, 4, 4, p=0.4)
    graph.root = 0
    spec = GraphViewSpec(subgraph_keep=0.5, edge_drop_p=0.3, feature_mask_p=0.5, node_mask_rate=0.5)
    view, _ = make_graph_view(graph, spec, 0, random.Random(0))
    again, _ = make_graph_view(graph, spec, 0, random.Random(0))
    assert view.num_nodes == 10 and view.root == 0 and int(view.node_mask.sum()) == 5
    assert torch.equal(view.x, again.x) and torch.equal(view.edge_index, again.edge_index)
    assert view.edge_index.max() < 10
    assert (view.x.abs().sum(1) == 0).any()  # some nodes' features masked
    batch = collate_graphs([view, again])
    assert batch.roots.tolist() == [0, 10] and batch.node_mask.shape == (20,)


def write_graph_folder(root, missing_node=True, graphs=False):
    root.mkdir()
    rng = np.random.default_rng(0)
    lines, edges = ["id,f0,f1,label" + (",graph" if graphs else "")], []
    for i in range(40):
        group = i // 10
        extra = f",g{group}" if graphs else ""
        lines.append(f"n{i},{rng.normal(group):.3f},{rng.normal():.3f},{group % 2}{extra}")
        if i % 10:
            edges.append(f"n{i - 1},n{i}")
    if missing_node:
        edges.append("n3,ghost")
    (root / "nodes.csv").write_text("\n".join(lines) + "\n")
    (root / "edges.csv").write_text("source,target\n" + "\n".join(edges) + "\n")
    if graphs:
        (root / "graphs.csv").write_text("graph,label\n" + "".join(f"g{g},{g % 2}\n" for g in range(4)))


def test_an_edge_list_naming_a_missing_node_is_reported_and_skipped(tmp_path):
    write_graph_folder(tmp_path / "g")
    splits = open_data(tmp_path / "g", holdout_fraction=0.25)
    assert isinstance(splits.train, NodeSource) and len(splits.train) + len(splits.test) == 40
    assert len(splits.train.bad_files) == 1 and "ghost" in splits.train.bad_files[0][1]
    sample = splits.train.get_image(0)
    assert sample.root == 0 and sample.x.shape[1] == 2


def test_many_small_graphs_from_files_and_networkx(tmp_path):
    write_graph_folder(tmp_path / "g", missing_node=False, graphs=True)
    splits = open_data(tmp_path / "g", holdout_fraction=0.5)
    assert len(splits.train) + len(splits.test) == 4 and splits.train.get_image(0).num_nodes == 10
    nx = pytest.importorskip("networkx")
    graphs = [nx.path_graph(5 + i) for i in range(6)]
    nx_splits = graphs_from_networkx(graphs, labels=[i % 2 for i in range(6)], holdout_fraction=0.34)
    first = nx_splits.train.get_image(0)
    assert first.x.shape == (5, 1) and first.edge_index.shape[1] == 8  # 4 undirected edges, both ways


def test_the_encoder_trains_under_bf16_autocast():
    torch.manual_seed(0)
    batch = collate_graphs([random_graph(6, 3, 5), random_graph(4, 3, 6)])
    for name in ("gin_small", "gcn_small"):
        encoder = build_backbone(name, 1, node_features=3, hidden_dim=8, num_layers=2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = encoder(batch)
        out.float().sum().backward()  # the sparse product runs in float32 (no bf16 sparse backward on a CPU)
        assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)
