"""Hand-made inline SVG charts: line charts, scatter plots and grouped bar charts.

Written by hand rather than with matplotlib so that the report needs no plotting dependency and every plot is
a few kilobytes of text inside the HTML file (no external resources, no JavaScript). The SVG elements carry
no ``xmlns`` attribute: inline ``<svg>`` in HTML5 does not need one, and the report then holds no URL at all.
"""
from __future__ import annotations

import math
from html import escape
from typing import Sequence

# Tableau 10, then 10 more distinct colours for up to 20 classes; beyond that colours repeat.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#e7ba52", "#637939", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
           "#756bb1", "#636363")

_FONT = 'font-family="sans-serif" font-size="11"'


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 times a power of ten) covering [low, high];
    ``integer``: no fractional ticks (an axis of steps has no step 4.5)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw_step = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw_step)
    if integer:
        step = max(step, 1)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


def format_number(value: float) -> str:
    """Short tick / table label: 0.001, 12.5, 3.2k, 1.5e-05."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e4:
        return f"{value / 1e3:.3g}k" if magnitude < 1e6 else f"{value:.2g}"
    if magnitude < 1e-3:
        return f"{value:.1e}"
    return f"{value:.4g}"


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels of one axis in one notation: when any tick needs an exponent, all get one (0.001 next to
    5.0e-04 reads as two scales)."""
    labels = [format_number(t) for t in ticks]
    if any("e" in label for label in labels):
        labels = [f"{t:.1e}" if t else "0" for t in ticks]
    return labels


def _padded_range(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:  # a flat series still needs a visible band around it
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


class _Frame:
    """Maps data coordinates to pixels inside a plot area with margins for axes and labels."""

    def __init__(self, width, height, x_range, y_range, left=58, right=12, top=26, bottom=38):
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = left, right, top, bottom
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range

    def x(self, value: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (value - self.x0) / span * (self.width - self.left - self.right)

    def y(self, value: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.height - self.bottom - (value - self.y0) / span * (self.height - self.top - self.bottom)

    def axes(self, title: str, x_label: str, y_label: str, x_ticks=True, y_ticks=True,
             x_integer=False) -> list[str]:
        parts = [f'<rect x="0" y="0" width="{self.width}" height="{self.height}" fill="#ffffff"/>',
                 f'<text x="{self.width / 2:.1f}" y="16" text-anchor="middle" {_FONT} font-weight="bold">'
                 f"{escape(title)}</text>"]
        bottom, right = self.height - self.bottom, self.width - self.right
        if y_ticks:
            ticks = nice_ticks(self.y0, self.y1)
            for tick, label in zip(ticks, tick_labels(ticks)):
                y = self.y(tick)
                parts.append(f'<line x1="{self.left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e6e6e6"/>')
                parts.append(f'<text x="{self.left - 4}" y="{y + 3.5:.1f}" text-anchor="end" {_FONT}>{label}</text>')
        if x_ticks:
            ticks = nice_ticks(self.x0, self.x1, 6, integer=x_integer)
            for tick, label in zip(ticks, tick_labels(ticks)):
                x = self.x(tick)
                parts.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#333"/>')
                parts.append(f'<text x="{x:.1f}" y="{bottom + 15}" text-anchor="middle" {_FONT}>{label}</text>')
        parts.append(f'<polyline points="{self.left},{self.top} {self.left},{bottom} {right},{bottom}" '
                     'fill="none" stroke="#333"/>')
        if x_label:
            parts.append(f'<text x="{(self.left + right) / 2:.1f}" y="{self.height - 4}" text-anchor="middle" '
                         f"{_FONT}>{escape(x_label)}</text>")
        if y_label:
            cy = (self.top + bottom) / 2
            parts.append(f'<text x="12" y="{cy:.1f}" text-anchor="middle" transform="rotate(-90 12 {cy:.1f})" '
                         f"{_FONT}>{escape(y_label)}</text>")
        return parts


def _svg(width: int, height: int, parts: list[str], css_class: str, label: str) -> str:
    return (f'<svg class="{css_class}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{escape(label)}">' + "".join(parts) + "</svg>")


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at every position (shorter at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def line_chart(series: dict[str, Sequence[tuple[float, float]]], *, title: str, x_label: str = "step",
               y_label: str = "", width: int = 440, height: int = 250, smooth: bool = False) -> str:
    """One or more ``name -> [(x, y), ...]`` series as lines; non-finite points are left out (a gap in the
    data, e.g. a NaN loss, must not wreck the axis range). Series of up to 40 points also get dots, so a
    run with few logged steps still shows where its values are. ``smooth``: a long noisy series (a loss) is
    drawn faint with its running mean on top, so the trend is visible through the batch-to-batch noise.
    The last value of each series is written in the corner: it is what a reader looks for first."""
    clean = {name: [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)]
             for name, points in series.items()}
    clean = {name: points for name, points in clean.items() if points}
    if not clean:
        raise ValueError(f"no finite values to plot for '{title}'")
    xs = [x for points in clean.values() for x, _ in points]
    ys = [y for points in clean.values() for _, y in points]
    x_range = (min(xs), max(xs)) if max(xs) > min(xs) else (min(xs) - 1, max(xs) + 1)
    frame = _Frame(width, height, x_range, _padded_range(ys))
    parts = frame.axes(title, x_label, y_label, x_integer=all(float(x).is_integer() for x in xs))
    for i, (name, points) in enumerate(clean.items()):
        stroke = colour(i)
        coords = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in points)
        smoothed = smooth and len(points) > 50
        opacity = ' stroke-opacity="0.3"' if smoothed else ""
        parts.append(f'<polyline class="series" points="{coords}" fill="none" stroke="{stroke}" '
                     f'stroke-width="1.8"{opacity}/>')
        if smoothed:
            trend = running_mean([y for _, y in points], max(2, len(points) // 25))
            coords = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for (x, _), y in zip(points, trend))
            parts.append(f'<polyline class="trend" points="{coords}" fill="none" stroke="{stroke}" stroke-width="2"/>')
        if len(points) <= 40:
            parts += [f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="2.5" fill="{stroke}"/>'
                      for x, y in points]
    if len(clean) == 1:
        last = next(iter(clean.values()))[-1][1]
        parts.append(f'<text x="{frame.width - frame.right}" y="{frame.top - 4}" text-anchor="end" {_FONT} '
                     f'fill="#555">last: {format_number(last)}</text>')
    if len(clean) > 1:  # a legend only when there is something to tell apart
        for i, name in enumerate(clean):
            y = frame.top + 4 + 14 * i
            x = frame.width - frame.right - 120
            parts.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{colour(i)}"/>'
                         f'<text x="{x + 14}" y="{y + 9}" {_FONT}>{escape(name)}</text>')
    return _svg(width, height, parts, "chart line-chart", title)


def scatter_plot(points: Sequence[tuple[float, float]], labels: Sequence[int] | None, *, title: str,
                 class_names: Sequence[str] | None = None, width: int = 520, height: int = 440,
                 point_names: Sequence[str] | None = None) -> str:
    """2-D points coloured by integer label (one colour when ``labels`` is None), with a class legend on
    the right. ``point_names`` become hover tooltips."""
    if len(points) == 0:
        raise ValueError("no points to plot")
    legend_width = 110 if labels is not None else 0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    frame = _Frame(width, height, _padded_range(xs), _padded_range(ys), left=16, right=12 + legend_width,
                   top=26, bottom=16)
    parts = frame.axes(title, "", "", x_ticks=False, y_ticks=False)
    for i, (x, y) in enumerate(points):
        fill = colour(int(labels[i])) if labels is not None else PALETTE[0]
        tip = f"<title>{escape(point_names[i])}</title>" if point_names is not None else ""
        parts.append(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="2.6" fill="{fill}" '
                     f'fill-opacity="0.75">{tip}</circle>')
    if labels is not None:
        present = sorted(set(int(label) for label in labels))
        for row, label in enumerate(present[:28]):  # more classes than fit: the colours say enough
            name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
            x, y = width - legend_width + 4, frame.top + 14 * row
            parts.append(f'<circle cx="{x + 5}" cy="{y + 5}" r="4.5" fill="{colour(label)}"/>'
                         f'<text x="{x + 14}" y="{y + 9}" {_FONT}>{escape(str(name)[:14])}</text>')
    return _svg(width, height, parts, "chart scatter", title)


def bar_chart(groups: dict[str, dict[str, float]], *, title: str, width: int = 640, height: int = 260) -> str:
    """Grouped bars: ``metric -> {row: value}``; one colour per row (pretrained, baselines), a legend on top."""
    rows = list(dict.fromkeys(row for values in groups.values() for row in values))
    values = [v for per_row in groups.values() for v in per_row.values() if math.isfinite(v)]
    if not values:
        raise ValueError("no finite values to plot")
    width = max(width, 80 + 64 * len(groups))  # keep bars and their labels readable with many metrics
    low = min(0.0, min(values))
    high = max(values) if max(values) > low else low + 1
    frame = _Frame(width, height, (0, len(groups)), (low, high * 1.08), bottom=52)
    parts = frame.axes(title, "", "", x_ticks=False)
    slot = (frame.x(1) - frame.x(0)) * 0.8
    bar = slot / max(len(rows), 1)
    for g, (metric, per_row) in enumerate(groups.items()):
        start = frame.x(g) + (frame.x(1) - frame.x(0)) * 0.1
        for r, row in enumerate(rows):
            value = per_row.get(row)
            if value is None or not math.isfinite(value):
                continue
            top, base = frame.y(max(value, 0)), frame.y(min(value, 0))
            parts.append(f'<rect class="bar" x="{start + r * bar:.1f}" y="{top:.1f}" width="{bar * 0.92:.1f}" '
                         f'height="{max(base - top, 0.5):.1f}" fill="{colour(r)}"><title>{escape(row)} '
                         f"{escape(metric)}: {value:.4g}</title></rect>")
        label_x = start + slot / 2
        parts.append(f'<text x="{label_x:.1f}" y="{height - frame.bottom + 14}" text-anchor="middle" {_FONT}>'
                     f"{escape(metric[:18])}</text>")
    for r, row in enumerate(rows):
        x = frame.left + 8 + 120 * r
        parts.append(f'<rect x="{x}" y="{height - 16}" width="10" height="10" fill="{colour(r)}"/>'
                     f'<text x="{x + 14}" y="{height - 7}" {_FONT}>{escape(row)}</text>')
    return _svg(width, height, parts, "chart bar-chart", title)
