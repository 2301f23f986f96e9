"""``selfsup compare RUN_DIR...``: one table of several runs, in Markdown, CSV and HTML.

Each run directory contributes what it recorded: ``results.json`` (scores, the protocol they were measured
under, the data and its fingerprints), ``config.yaml`` (method, backbone, data, budget) and
``train_summary.json`` / ``metrics.jsonl`` (wall time, images/s). A folder written by ``selfsup eval
--backbone`` (results.json only) works too. Rows are the runs' feature rows (pretrained, then the
random-init and raw-pixel baselines); baseline rows that several runs share exactly are shown once.

Fairness: a number is only comparable with the numbers in its column when it was measured under the same
protocol. For every column the comparison keys are the image size, the training and test data
(fingerprints, or source and size for results written before fingerprints were recorded) and the settings of
the metric's own protocol that change its value (kNN temperature, few-shot seeds, ...; not e.g. which other
k values were swept). When a column mixes protocols, its cells carry a variant mark ``[a]``, ``[b]``, and a
note under the table (and on stderr) says which runs differ in what; ``strict=True`` refuses instead.
"""
from __future__ import annotations

import csv
import html
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from selfsup.eval.display import format_metric, row_label, is_plain_number, metric_label, table_metrics
from selfsup.eval.protocols import protocol_of
from selfsup.runs import CONFIG_FILE, METRICS_FILE, RESULTS_FILE, SUMMARY_FILE

__all__ = ["RunRecord", "load_run", "build_comparison", "Comparison", "compare_runs", "ProtocolMismatch"]

DESCRIPTIVE = ("run", "features", "method", "backbone", "data", "budget", "wall time (s)", "images/s")


class ProtocolMismatch(ValueError):
    """Runs measured under different protocols were asked to share a column with ``strict=True``."""


@dataclass
class RunRecord:
    """What one run directory says about itself."""

    path: Path
    name: str
    method: str | None
    backbone: str | None
    data: str | None
    budget: str | None
    wall_time_s: float | None
    images_per_s: float | None
    protocol: dict
    data_info: dict
    results: dict


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _last_metrics(path: Path) -> dict:
    last = {}
    try:
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    last = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash: keep the last complete one
                    continue
    except OSError:
        pass
    return last


def _budget(cfg: dict) -> str | None:
    train = cfg.get("train") or {}
    if train.get("budget"):
        return str(train["budget"])
    if train.get("epochs"):
        return f"{train['epochs']:g} epochs"
    if train.get("max_steps"):
        return f"{train['max_steps']} steps"
    return None


def load_run(path: str | Path) -> RunRecord:
    """Read a run directory (or a ``selfsup eval --backbone`` folder); it must hold ``results.json``."""
    path = Path(path)
    results = _read_json(path / RESULTS_FILE)
    if results is None:
        hint = " (it has no evaluation: was it trained without labels, or did it stop early?)" if path.is_dir() else ""
        raise FileNotFoundError(f"{path / RESULTS_FILE} is missing or unreadable{hint}; "
                                f"evaluate it with `selfsup eval {path}`")
    cfg = {}
    if (path / CONFIG_FILE).exists():
        cfg = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
    run = results.get("run") or {}
    summary = _read_json(path / SUMMARY_FILE) or {}
    metrics = _last_metrics(path / METRICS_FILE)
    wall = run.get("wall_time_s", summary.get("wall_time_s", metrics.get("elapsed_s")))
    speed = run.get("images_per_s", summary.get("images_per_s", metrics.get("images_per_s")))
    backbone = run.get("backbone") or (cfg.get("backbone") or {}).get("name")
    if run.get("weights"):
        backbone = f"{backbone} ({Path(run['weights']).name})"
    return RunRecord(
        path=path, name=path.name, method=run.get("method") or cfg.get("method"), backbone=backbone,
        data=(results.get("data") or {}).get("source") or (cfg.get("data") or {}).get("source"),
        budget=_budget(cfg), wall_time_s=wall, images_per_s=speed, protocol=results.get("protocol") or {},
        data_info=results.get("data") or {}, results=results.get("results") or {})


def protocol_signature(run: RunRecord, metric: str) -> dict:
    """The settings under which ``run`` measured ``metric``: equal signatures mean comparable values."""
    data = run.data_info
    signature = {
        "image_size": run.protocol.get("image_size"),
        # Fingerprints when recorded; otherwise the best older results.json offers.
        "train data": data.get("train_fingerprint") or f"{data.get('source')} ({data.get('train_images')} images)",
        "test data": data.get("test_fingerprint") or f"{data.get('source')} ({data.get('test_images')} images)",
    }
    protocol = protocol_of(metric)  # the protocol that writes the metric decides which of its settings count
    if protocol is not None:
        family, settings = protocol.name, run.protocol.get(protocol.name)
        if isinstance(settings, dict):
            for key, value in settings.items():
                if key not in protocol.scope_keys:
                    signature[f"{family}.{key}"] = value
        else:
            signature[family] = settings
    return signature


def _freeze(signature: dict) -> str:
    return json.dumps(signature, sort_keys=True, default=str)


@dataclass
class Comparison:
    """The table: descriptive columns, metric columns, rows of cells, and the protocol notes."""

    metrics: list[str]
    rows: list[dict]  # descriptive fields + metric values (raw) + "_marks": {metric: letter}
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------------------------------ outputs
    def _cell(self, row: dict, metric: str) -> str:
        cell = format_metric(metric, row.get(metric), row.get(metric + "_std"))
        mark = row["_marks"].get(metric)
        return f"{cell} [{mark}]" if mark and metric in row else cell

    def _descriptive(self, row: dict, column: str) -> str:
        value = row.get(column)
        if value is None:
            return "-"
        if column == "wall time (s)":
            return f"{value:.0f}"
        if column == "images/s":
            return f"{value:.0f}"
        return str(value)

    def header(self) -> list[str]:
        return list(DESCRIPTIVE) + [metric_label(m) + ("" if is_plain_number(m) else " (%)") for m in self.metrics]

    def text_rows(self) -> list[list[str]]:
        return [[self._descriptive(r, c) for c in DESCRIPTIVE] + [self._cell(r, m) for m in self.metrics]
                for r in self.rows]

    def markdown(self) -> str:
        def esc(text: str) -> str:
            return text.replace("|", "\\|")

        lines = ["| " + " | ".join(self.header()) + " |", "|" + "---|" * len(self.header())]
        lines += ["| " + " | ".join(esc(c) for c in cells) + " |" for cells in self.text_rows()]
        if self.notes:
            lines += ["", *[f"> **Warning:** {note}" for note in self.notes]]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """Raw values (fractions as in results.json, not percentages), one column per metric and std."""
        columns = list(DESCRIPTIVE)
        for m in self.metrics:
            columns.append(m)
            if any(m + "_std" in r for r in self.rows):
                columns.append(m + "_std")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns + ["protocol_mismatch"])
        for row in self.rows:
            marks = " ".join(f"{m}=[{letter}]" for m, letter in row["_marks"].items() if m in row)
            writer.writerow([("" if row.get(c) is None else row.get(c)) for c in columns] + [marks])
        return buffer.getvalue()

    def html(self, title: str = "selfsup compare") -> str:
        e = html.escape
        head = "".join(f"<th>{e(h)}</th>" for h in self.header())
        body = []
        for row, cells in zip(self.rows, self.text_rows()):
            tds = [f"<td>{e(c)}</td>" for c in cells[:len(DESCRIPTIVE)]]
            for m, c in zip(self.metrics, cells[len(DESCRIPTIVE):]):
                flagged = " class=\"mismatch\"" if row["_marks"].get(m) and m in row else ""
                tds.append(f"<td{flagged}>{e(c)}</td>")
            body.append("<tr>" + "".join(tds) + "</tr>")
        notes = "".join(f"<p class=\"warning\">Warning: {e(n)}</p>" for n in self.notes)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
            "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
            "td:nth-child(-n+6){text-align:left}.mismatch{background:#fff3cd}"
            ".warning{background:#fff3cd;border-left:4px solid #e0a800;padding:6px 10px}"
            f"</style></head><body><h1>{e(title)}</h1>{notes}<table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></body></html>\n"
        )

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": out_dir / "compare.md", "csv": out_dir / "compare.csv", "html": out_dir / "compare.html"}
        paths["markdown"].write_text(self.markdown())
        paths["csv"].write_text(self.csv())
        paths["html"].write_text(self.html())
        return paths


def _describe_difference(signatures: list[dict]) -> str:
    keys = sorted({k for s in signatures for k in s})
    parts = []
    for key in keys:
        values = [s.get(key) for s in signatures]
        if len({_freeze({"v": v}) for v in values}) > 1:
            parts.append(f"{key} " + " vs ".join(json.dumps(v, default=str) for v in values))
    return "; ".join(parts)


def build_comparison(records: list[RunRecord], baselines: bool = True) -> Comparison:
    """The comparison table of ``records``, with a variant mark and a note wherever protocols differ."""
    rows, seen = [], {}
    for record in records:
        for kind, scores in record.results.items():
            if kind != "pretrained" and not baselines and "pretrained" in record.results:
                continue
            row = {"run": record.name, "features": row_label(kind, record.data_info.get("kind")), "method": record.method,
                   "backbone": record.backbone, "data": record.data, "budget": record.budget,
                   "wall time (s)": record.wall_time_s, "images/s": record.images_per_s,
                   **scores, "_record": record, "_kind": kind}
            if kind in ("random_init", "raw_pixels"):
                # A baseline shared exactly by several runs (same data, protocol, and for random-init the same
                # architecture and seed, hence the same numbers) is shown once.
                key = _freeze({"kind": kind, "backbone": record.backbone if kind == "random_init" else None,
                               "scores": scores,
                               "protocol": {m: protocol_signature(record, m) for m in scores}})
                if key in seen:
                    seen[key]["_shared"] += 1
                    continue
                row["_shared"] = 0
                seen[key] = row
                row.update({"method": None, "budget": None, "wall time (s)": None, "images/s": None})
                if kind == "raw_pixels":
                    row["backbone"] = None
            rows.append(row)
    for row in rows:
        if row.get("_shared"):
            row["run"] = f"{row['run']} (+{row['_shared']} identical)"
    metrics = table_metrics([{k: v for k, v in r.items() if not k.startswith("_") and k not in DESCRIPTIVE}
                             for r in rows])

    # Protocol variants per column: letters in order of first appearance.
    notes_by_text: dict[str, list[str]] = {}
    for row in rows:
        row["_marks"] = {}
    for metric in metrics:
        variants: dict[str, str] = {}
        members: dict[str, list[str]] = {}
        signatures: dict[str, dict] = {}
        for row in rows:
            if metric not in row:
                continue
            signature = protocol_signature(row["_record"], metric)
            key = _freeze(signature)
            if key not in variants:
                variants[key] = "abcdefghijklmnopqrstuvwxyz"[len(variants) % 26]
                signatures[key] = signature
                members[key] = []
            if row["_record"].name not in members[key]:
                members[key].append(row["_record"].name)
            row["_marks"][metric] = variants[key]
        if len(variants) <= 1:
            for row in rows:
                row["_marks"].pop(metric, None)
            continue
        groups = "; ".join(f"[{variants[k]}] {', '.join(members[k])}" for k in variants)
        text = (f"measured under {len(variants)} different protocols, not comparable with each other: {groups}. "
                f"They differ in: {_describe_difference(list(signatures.values()))}.")
        notes_by_text.setdefault(text, []).append(metric_label(metric))
    notes = [f"column{'s' if len(cols) > 1 else ''} {', '.join(cols)} {text}" for text, cols in notes_by_text.items()]
    clean = [{k: v for k, v in r.items() if k not in ("_record", "_kind", "_shared")} for r in rows]
    return Comparison(metrics=metrics, rows=clean, notes=notes)


def compare_runs(run_dirs, out_dir=None, *, strict: bool = False, baselines: bool = True,
                 warn=lambda message: print(f"selfsup compare: warning: {message}", file=sys.stderr)) -> Comparison:
    """Load the runs, build the table, warn about (or with ``strict`` refuse) protocol mismatches, write it."""
    if not run_dirs:
        raise ValueError("give at least one run directory to compare")
    comparison = build_comparison([load_run(p) for p in run_dirs], baselines=baselines)
    if comparison.notes and strict:
        raise ProtocolMismatch("refusing to compare runs evaluated under different protocols:\n  "
                               + "\n  ".join(comparison.notes))
    for note in comparison.notes:
        warn(note)
    if out_dir is not None:
        comparison.write(out_dir)
    return comparison
