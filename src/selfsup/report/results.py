"""The report's results section: results.json's table with the baselines, a bar chart of the percentage scores,
and what each protocol that ran measured (its description, from the protocol registry, and its settings)."""
from __future__ import annotations

import json
from html import escape

from selfsup.eval.display import format_metric, row_label, is_plain_number, is_score, metric_label, table_metrics
from selfsup.eval.protocols import PROTOCOLS
from selfsup.report.context import RunContext, finite
from selfsup.report.html import table
from selfsup.report.svg import bar_chart, format_number

# Entries of results.json's ``protocol`` record that are not one protocol's settings.
_GENERAL = ("protocols", "seed", "image_size")


def _value(value) -> str:
    if finite(value):
        return escape(format_number(float(value)))
    return escape(str(value)) if value is not None else "&ndash;"


def _settings_text(entry) -> str:
    if isinstance(entry, dict):
        return "; ".join(f"{key} {json.dumps(value)}" for key, value in entry.items())
    return "" if entry is None else str(entry)


def protocol_notes(record: dict) -> str:
    """One line per protocol that ran: title, description (for protocols this selfsup knows) and settings."""
    names = record.get("protocols") or [k for k in record if k not in _GENERAL]
    items = []
    for name in names:
        protocol = PROTOCOLS[name] if name in PROTOCOLS else None
        title = protocol.title if protocol is not None and protocol.title else name
        about = f": {protocol.description}" if protocol is not None and protocol.description else ""
        settings = _settings_text(record.get(name))
        items.append(f"<li><b>{escape(title)}</b> (<code>{escape(name)}</code>){escape(about)}"
                     + (f' <span class="note">[{escape(settings)}]</span>' if settings else "") + "</li>")
    return f'<ul class="protocols">{"".join(items)}</ul>' if items else ""


def results_table(ctx: RunContext) -> str:
    """results.json as the evaluation prints it (one column per row: pretrained and the baselines; fractions
    as percentages, few-shot spreads as ``± std``), a bar chart of the percentage scores and the protocols."""
    payload = ctx.results
    results = payload["results"]
    kind = payload.get("data", {}).get("kind")  # names the raw row: raw pixels, or raw features (tables, graphs)
    rows = list(results)
    metrics = table_metrics(results.values())
    body = [[escape(metric_label(m) + (" (raw)" if is_plain_number(m) else ""))]
            + [escape(format_metric(m, results[r].get(m), results[r].get(m + "_std"))) for r in rows]
            for m in metrics]
    html = table(["metric (%)"] + [row_label(r, kind) for r in rows], body, "results")
    settings = sorted({m for r in rows for m in results[r] if not is_score(m)})
    if settings:  # e.g. the linear probe's weight decay, chosen on a validation split: a setting, not a score
        html += '<p class="note">Chosen settings (not scores): ' + "; ".join(
            f"{escape(m)} " + ", ".join(f"{escape(row_label(r, kind))} {_value(results[r].get(m))}" for r in rows
                                       if m in results[r]) for m in settings) + "</p>"
    fractions = {metric_label(m): {row_label(r, kind): 100 * float(results[r][m]) for r in rows
                                   if finite(results[r].get(m))}
                 for m in metrics if not is_plain_number(m)}
    fractions = {m: v for m, v in list(fractions.items())[:16] if v}
    if fractions:
        html += bar_chart(fractions, title="scores (%): pretrained vs baselines")
    data = payload.get("data", {})
    html += (f'<p class="note">Evaluated on {escape(str(data.get("source")))}: {data.get("train_images")} training '
             f'and {data.get("test_images")} test images, {data.get("num_classes")} classes; evaluation took '
             f'{payload.get("eval_time_s", "?")} s.</p>')
    record = payload.get("protocol", {})
    html += protocol_notes(record)
    return html + f"<details><summary>protocol settings</summary><pre>{escape(json.dumps(record, indent=1))}</pre></details>"
