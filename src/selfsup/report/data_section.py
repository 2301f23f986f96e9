"""The report's data section: what the run read. The files it skipped, each with its reason (also in
``bad_files.txt``), and for raw domain data the per-band statistics and the pixel window the run used
(``data_stats.json``)."""
from __future__ import annotations

from html import escape

from selfsup.data.stats import load_stats
from selfsup.report.context import NotAvailable, RunContext
from selfsup.report.html import table
from selfsup.runs import BAD_FILES, DATA_STATS_FILE

MAX_LISTED = 200  # skipped files listed in the page; bad_files.txt holds them all


def _skipped(ctx: RunContext) -> str:
    path = ctx.run_dir / BAD_FILES
    if not path.is_file():
        return "<p>No file was skipped.</p>"
    lines = [line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [[f"<code>{escape(entry[0])}</code>", escape(entry[1] if len(entry) > 1 else "")]
            for entry in lines[:MAX_LISTED]]
    more = f"<p>... and {len(lines) - MAX_LISTED} more in {escape(BAD_FILES)}.</p>" if len(lines) > MAX_LISTED else ""
    return (f"<p>{len(lines)} file(s) skipped, not trained on (listed in <code>{escape(BAD_FILES)}</code>):</p>"
            + table(["file", "reason"], rows) + more)


def _bands(ctx: RunContext) -> str:
    path = ctx.run_dir / DATA_STATS_FILE
    if not path.is_file():
        return ""
    stats = load_stats(path)
    try:
        cfg = ctx.config
        clip = cfg.data.clip_percentiles
        mean, std = cfg.data.mean or [None] * stats.channels, cfg.data.std or [None] * stats.channels
    except NotAvailable:
        clip, mean, std = (1.0, 99.0), [None] * stats.channels, [None] * stats.channels
    window = stats.window(None if clip is None else tuple(clip))

    def number(value) -> str:
        return "" if value is None else f"{value:.4g}"

    rows = [[str(c), number(stats.mean[c]), number(stats.std[c]), number(stats.min[c]), number(stats.max[c]),
             f"{number(window.low[c])} .. {number(window.high[c])}", number(mean[c]), number(std[c])]
            for c in range(stats.channels)]
    sampled = f", a sample of {stats.images} of {stats.files} images" if stats.images < stats.files else ""
    return (f"<p>Raw data: {stats.channels} bands of {escape(stats.dtype)}{escape(sampled)}. Each band's window "
            "maps to [0, 1] (values outside are clipped); the normalisation is that of the windowed data.</p>"
            + table(["band", "mean", "std", "min", "max", "window", "norm. mean", "norm. std"], rows))


def data_section(ctx: RunContext) -> str:
    """Skipped files and, for raw data, the bands' statistics and window."""
    ctx.config  # raises NotAvailable where there is no run (no config.yaml): nothing was read
    return _bands(ctx) + _skipped(ctx)
