"""The report's picture of data that is not images: a table's column statistics, point clouds seen from above
and from the side, a graph drawn with a spectral layout. Image runs have their own sections (retrieval,
augmented views); for them this section is not available, and for these kinds those are not."""
from __future__ import annotations

from html import escape

import numpy as np

from selfsup.report.context import NotAvailable, RunContext
from selfsup.report.html import table
from selfsup.report.svg import colour, scatter_plot
from selfsup.views.kinds import kind_of, pipeline_of
from selfsup.views.points import eval_points

SHOWN = 4  # clouds / graphs drawn


def not_for_other_kinds(ctx: RunContext, what: str) -> None:
    """Raise NotAvailable where the run's data is a table, point clouds or graphs (sections drawn for images)."""
    if pipeline_of(ctx.splits.train) is not None:
        raise NotAvailable(f"{what} are drawn for images; this run's data is {kind_of(ctx.splits.train)} data "
                           "(see 'What the data looks like')")


def _table(source) -> str:
    stats = source.table_stats
    rows = []
    for column in stats.columns:
        if column.kind == "numeric":
            summary = f"mean {column.mean:.4g}, std {column.std:.4g}"
        else:
            shown = ", ".join(column.categories[:6]) + (" ..." if len(column.categories) > 6 else "")
            summary = f"{len(column.categories)} categories: {shown}"
        rows.append([escape(column.name), column.kind, f"{100 * column.missing_fraction:.1f}%", escape(summary)])
    return (f"<p>{len(source)} training rows, {len(stats.columns)} feature columns; numbers are standardised and "
            "categories embedded with these training-split statistics (a category the training rows lack reads as "
            "missing).</p>" + table(["column", "kind", "missing", "statistics"], rows))


def _points(source) -> str:
    parts = []
    for i in range(min(SHOWN, len(source))):
        cloud = eval_points(source.get_image(i)).numpy()
        name = source.classes[int(source.labels[i])] if source.labels is not None and source.classes else f"cloud {i}"
        for axes, view in (((0, 1), "x-y"), ((0, 2), "x-z")):
            parts.append(scatter_plot([(float(p[axes[0]]), float(p[axes[1]])) for p in cloud], None,
                                      title=f"{name} ({view})", width=220, height=220))
    return "<p>Held-out clouds as the encoder sees them (centred, unit sphere), projected on two planes.</p>" + \
        "".join(parts)


def spectral_layout(num_nodes: int, edges: np.ndarray) -> np.ndarray:
    """(V, 2) node positions: the Laplacian's second and third eigenvectors (Hall 1970), scaled to [-1, 1]."""
    adjacency = np.zeros((num_nodes, num_nodes))
    adjacency[edges[0], edges[1]] = 1.0
    laplacian = np.diag(adjacency.sum(1)) - adjacency
    _, vectors = np.linalg.eigh(laplacian + 1e-9 * np.eye(num_nodes))
    xy = vectors[:, 1:3] if num_nodes > 2 else np.random.default_rng(0).random((num_nodes, 2))
    xy = xy - xy.mean(0)
    return xy / max(1e-9, float(np.abs(xy).max()))


def graph_svg(graph, title: str, size: int = 240) -> str:
    n = graph.num_nodes
    edges = graph.edge_index.numpy()
    xy = spectral_layout(n, edges) * (size / 2 - 14) + size / 2
    lines = [f'<line x1="{xy[a, 0]:.1f}" y1="{xy[a, 1]:.1f}" x2="{xy[b, 0]:.1f}" y2="{xy[b, 1]:.1f}" '
             'stroke="#999" stroke-width="0.7"/>' for a, b in edges.T if a < b]
    nodes = [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{5 if i == graph.root else 3}" '
             f'fill="{colour(1 if i == graph.root else 0)}"/>' for i, (x, y) in enumerate(xy)]
    return (f'<svg class="chart graph" width="{size}" height="{size + 18}" role="img" aria-label="{escape(title)}">'
            f'<text x="4" y="13" font-size="12">{escape(title)}</text><g transform="translate(0,18)">'
            + "".join(lines + nodes) + "</g></svg>")


def _graphs(source) -> str:
    parts = []
    for i in range(min(SHOWN, len(source))):
        graph = source.get_image(i)
        name = source.classes[int(source.labels[i])] if source.labels is not None and source.classes else f"graph {i}"
        parts.append(graph_svg(graph, f"{name}: {graph.num_nodes} nodes, {graph.edge_index.shape[1] // 2} edges"))
    return ("<p>Training samples (a node-level sample is its neighbourhood, its node larger), drawn with a spectral "
            "layout.</p>" + "".join(parts))


def kind_data(ctx: RunContext) -> str:
    """What a table, point-cloud or graph run's data looks like."""
    train = ctx.splits.train
    kind = kind_of(train)
    if pipeline_of(train) is None:
        raise NotAvailable("image runs show their data in the retrieval and augmented-views sections")
    if hasattr(train, "table_stats"):
        return _table(train)
    if kind == "points":
        return _points(ctx.splits.test or train)
    if kind == "graph":
        return _graphs(train)
    raise NotAvailable(f"no picture of {kind} data")


__all__ = ["graph_svg", "kind_data", "not_for_other_kinds", "spectral_layout"]
