"""Assemble the sections into one self-contained ``report.html``.

The page has no script and no external resource: styles are inline, plots are inline SVG, images are
``data:`` URIs. It therefore opens anywhere (a browser without network, an e-mail attachment, a CI
artifact) and renders without console errors.
"""
from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from functools import partial
from html import escape
from pathlib import Path
from typing import Callable, Sequence

import torch

from selfsup.files import write_atomic
from selfsup.report.context import NotAvailable, RunContext
from selfsup.report.projection import default_projections
from selfsup.report.sections import SECTIONS, embedding_map

REPORT_FILE = "report.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 0 24px 40px; color: #222;
       background: #fff; }
h1 { margin: 20px 0 4px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
nav { font-size: 14px; margin-bottom: 8px; } nav a { margin-right: 14px; color: #1f5fa8; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; } .chart { border: 1px solid #e3e3e3; }
table { border-collapse: collapse; font-size: 14px; margin: 6px 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: middle; }
table.facts th { background: #f6f6f6; font-weight: 600; } table.results td:not(:first-child) { text-align: right; }
.thumb { display: inline-block; margin: 2px 4px; text-align: center; vertical-align: top; }
.thumb img { image-rendering: pixelated; display: block; margin: 0 auto; }
figcaption { font-size: 11px; color: #555; max-width: 96px; }
.saved { margin: 6px 0; } .saved img { max-width: 100%; image-rendering: pixelated; }
.saved figcaption { max-width: none; } .pair { display: inline-flex; margin: 0 18px 8px 0; }
.grid-row { display: flex; flex-wrap: wrap; align-items: flex-start; margin-bottom: 6px; }
.grid-row > .thumb:first-child { margin-right: 14px; }
.not-available { color: #8a6d3b; background: #fcf8e3; padding: 6px 10px; border-radius: 4px; display: inline-block; }
.note { color: #555; font-size: 14px; } footer { margin-top: 36px; color: #888; font-size: 12px; }
"""


def _warn(message: str) -> None:
    print(f"[selfsup] {message}", file=sys.stderr, flush=True)


def render_section(anchor: str, title: str, builder: Callable[[RunContext], str], ctx: RunContext) -> str:
    """One ``<section>``; any failure becomes a visible "not available: <reason>" instead of a crash."""
    try:
        body = builder(ctx)
    except NotAvailable as reason:
        body = f'<p class="not-available">not available: {escape(str(reason))}</p>'
    except Exception as error:  # a bug in one section must not cost the others (or the run)
        ctx.log(f"warning: report section '{title}' failed: {type(error).__name__}: {error}")
        body = (f'<p class="not-available">not available: this section failed ({escape(type(error).__name__)}: '
                f"{escape(str(error))})</p>")
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def build_html(ctx: RunContext, projections: Sequence[str] | None = None) -> str:
    projections = tuple(projections) if projections else default_projections()
    builders = {anchor: builder for anchor, _, builder in SECTIONS}
    builders["embedding-map"] = partial(embedding_map, projections=projections)
    sections = "".join(render_section(anchor, title, builders[anchor], ctx) for anchor, title, _ in SECTIONS)
    nav = "".join(f'<a href="#{anchor}">{escape(title)}</a>' for anchor, title, _ in SECTIONS)
    name = ctx.run_dir.resolve().name
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>selfsup report: {escape(name)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>selfsup run report: {escape(name)}</h1><nav>{nav}</nav>{sections}"
            f"<footer>Written by <code>selfsup report</code> on {datetime.now():%Y-%m-%d %H:%M:%S}. "
            "One self-contained file: no scripts, no external resources.</footer></body></html>")


def write_report(run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None, splits=None,
                 projections: Sequence[str] | None = None, device: str | None = None,
                 log: Callable[[str], None] = _warn) -> Path:
    """Write ``RUN_DIR/report.html`` (or ``out``) and return its path.

    ``splits``: the run's already opened data (saves reopening it at the end of a run); ``projections``:
    the 2-D maps to draw, any of ``pca``, ``tsne``, ``umap`` (default: PCA, plus UMAP when installed).
    Sections whose inputs are missing say so in the page; only an unreadable run directory raises.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    start = time.perf_counter()
    ctx = RunContext(run_dir, splits=splits, device=device, log=log)
    with torch.random.fork_rng(devices=[]):  # feature maps and views must not shift the caller's random stream
        html = build_html(ctx, projections)
    path = Path(out) if out is not None else run_dir / REPORT_FILE
    write_atomic(path, html)  # a report being rewritten is never seen half-written
    log(f"report written to {path} ({len(html) / 1024:.0f} KiB, {time.perf_counter() - start:.1f} s)")
    return path
