"""How results are shown: which metrics are columns, in what order, with what labels and number format.

Everything protocol-specific comes from the protocol registry (:mod:`selfsup.eval.protocols`): the order of
the metric families, the metrics that are settings rather than scores, and the scores that are not fractions.
The evaluation's printout, ``selfsup compare`` and the report all use these functions.
"""
from __future__ import annotations

from selfsup.eval.protocols import is_plain_number, is_score, metric_order
from selfsup.fields import raw_row_label

#: Display names of the result rows (the raw row's name depends on the data's kind: :func:`row_label`).
ROWS = {"pretrained": "pretrained", "start": "at step 0", "random_init": "random-init", "raw_pixels": "raw pixels"}

__all__ = ["ROWS", "row_label", "metric_sort_key", "table_metrics", "metric_label", "format_metric", "format_table",
           "is_score", "is_plain_number"]


def row_label(row: str, kind: str | None = None) -> str:
    """A result row's display name; ``kind``: the field kind of the evaluated data (results.json's
    ``data.kind``), which names the raw row ("raw pixels" for images, "raw features" for tables, clouds, graphs)."""
    return raw_row_label(kind) if row == "raw_pixels" else ROWS.get(row, row)


def _number_in(name: str) -> float:
    digits = "".join(ch if ch.isdigit() or ch == "." else " " for ch in name).split()
    try:
        return float(digits[0]) if digits else 0.0
    except ValueError:
        return 0.0


def metric_sort_key(name: str):
    """Protocol order, then the metric's prefix within the protocol, then the number in its name (k=5 before
    k=10), then the name; metrics no protocol declares come last, alphabetically."""
    order, position, rest = metric_order(name)
    return (order, position, _number_in(rest), name)


def table_metrics(rows) -> list[str]:
    """The metric columns to show for these result rows (dicts), in display order; ``*_std`` companions of a
    present metric are folded into its cell (see :func:`format_metric`)."""
    present = {m for r in rows for m in r}
    shown = [m for m in present if is_score(m) and not (m.endswith("_std") and m[:-4] in present)]
    return sorted(shown, key=metric_sort_key)


def metric_label(name: str) -> str:
    """Short column title: ``knn_top1@20`` -> ``knn@20``, ``fewshot_5shot_top1`` -> ``fewshot_5shot``."""
    return name.replace("_top1", "")


def format_metric(name: str, value, std=None) -> str:
    """A cell: fractions as percentages with one decimal (``std`` as ``± s``), other scores with 3 decimals."""
    if value is None:
        return "-"
    if isinstance(value, float) and value != value:
        return "nan"
    if is_plain_number(name) or not isinstance(value, (int, float)):
        return f"{value:.3f}" if isinstance(value, float) else str(value)
    cell = f"{100 * value:.1f}"
    return cell + (f" ± {100 * std:.1f}" if std is not None else "")


def format_table(results: dict, kind: str | None = None) -> str:
    """A text table with one line per metric and one column per row of ``results`` (pretrained, baselines);
    ``kind``: the evaluated data's field kind (names the raw row, :func:`row_label`)."""
    metrics = table_metrics(results.values())
    names = list(results)
    width = max([len(metric_label(m)) for m in metrics] + [8]) + 2
    cols = [max(len(row_label(n, kind)), 14) + 2 for n in names]
    header = f"{'metric (%)':<{width}}" + "".join(f"{row_label(n, kind):>{w}}" for n, w in zip(names, cols))
    lines = [header, "-" * len(header)]
    for m in metrics:
        cells = "".join(
            f"{format_metric(m, results[n].get(m), results[n].get(m + '_std')):>{w}}" for n, w in zip(names, cols))
        label = metric_label(m) + (" (raw)" if is_plain_number(m) else "")
        lines.append(f"{label:<{width}}{cells}")
    for n in names:  # a probe fitted on fewer training images than the others says so under the table
        if results[n].get("linear_train_subset"):
            lines.append(f"{row_label(n, kind)}: linear probe fitted on a class-balanced {results[n]['linear_train_subset']} "
                         "training images (eval.linear.raw_pixels_max_train)")
    return "\n".join(lines)
