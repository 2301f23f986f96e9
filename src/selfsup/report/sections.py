"""The report's sections: each a function ``(RunContext) -> HTML`` that raises NotAvailable with a reason when
its inputs are missing. :data:`SECTIONS` lists them in page order."""
from __future__ import annotations

from html import escape
from typing import Callable

import numpy as np
import torch

from selfsup.backbones.vit import ViTBackbone
from selfsup.report.attention import class_token_attention
from selfsup.report.data_section import data_section
from selfsup.report.context import MAX_MAP_POINTS, NotAvailable, RunContext, finite, query_positions
from selfsup.report.html import table
from selfsup.report.kind_data import kind_data, not_for_other_kinds
from selfsup.report.media import shown_input  # sounds as spectrograms, videos as frame strips
from selfsup.report.image_text import image_text_retrieval, zero_shot_classification
from selfsup.report.images import center_square, file_data_uri, heatmap_overlay, img_tag
from selfsup.report.projection import project_2d
from selfsup.report.results import results_table
from selfsup.report.svg import line_chart, scatter_plot
from selfsup.runs import build_run_method
from selfsup.views.dataset import EpochBatchSampler, ViewCollate, ViewDataset
from selfsup.views.preprocess import Preprocess

# metrics.jsonl keys that are the x axis or bookkeeping rather than something to plot.
_BOOKKEEPING = {"step", "epoch", "elapsed_s"}
# The training section's charts; everything else numeric goes to the monitor section.
_TRAINING = {"loss": "loss", "lr": "learning rate", "images_per_s": "throughput (images/s)",
             "grad_norm": "gradient norm (before clipping)"}
_CORRECT, _WRONG = "#2ca02c", "#d62728"
# Files above this size are linked by name instead of embedded, so the report stays a few MB at most.
MAX_EMBEDDED_IMAGE_BYTES = 4 * 1024 * 1024


# ----------------------------------------------------------------------------------------------- overview
def overview(ctx: RunContext) -> str:
    """What was trained on what, for how long and how fast, where."""
    facts: list[tuple[str, str]] = [("run directory", str(ctx.run_dir.resolve()))]
    try:
        cfg = ctx.config
        budget = cfg.train.budget or (f"{cfg.train.epochs:g} epochs" if cfg.train.epochs else
                                      f"{cfg.train.max_steps} steps")
        facts += [("method", cfg.method), ("backbone", cfg.backbone.name), ("data", cfg.data.source),
                  ("image size", f"{cfg.data.image_size} px"), ("batch size", str(cfg.train.batch_size)),
                  ("optimizer", f"{cfg.optim.name}, lr {cfg.optim.lr:g}"), ("budget", budget),
                  ("seed", str(cfg.seed))]
    except NotAvailable as reason:
        facts.append(("config", f"not available: {reason}"))
    try:
        summary = ctx.train_summary
        facts += [("trained", f"{summary.get('steps')} steps, {summary.get('epochs', 0):.2f} epochs in "
                              f"{summary.get('wall_time_s', 0):.0f} s"),
                  ("throughput", f"{summary.get('images_per_s', 0):.0f} images/s")]
    except NotAvailable as reason:
        facts.append(("training summary", f"not available: {reason}"))
    try:
        env = ctx.environment
        facts += [("device", f"{env.get('device')} ({env.get('cuda') or env.get('processor') or 'CPU'}), "
                             f"{env.get('world_size', 1)} process(es), {env.get('precision')}"),
                  ("versions", f"selfsup {env.get('selfsup')}, torch {env.get('torch')}, "
                               f"python {env.get('python')}"),
                  ("git commit", str(env.get("git_commit"))), ("started", str(env.get("started")))]
    except NotAvailable as reason:
        facts.append(("environment", f"not available: {reason}"))
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)
    return f'<table class="facts">{rows}</table>'


# ------------------------------------------------------------------------------------------------- curves
def _charts(ctx: RunContext, keys: list[str], titles: dict[str, str]) -> list[str]:
    charts = []
    for key in keys:
        series = ctx.metric_series(key)
        if any(finite(y) for _, y in series):
            charts.append(line_chart({key: series}, title=titles.get(key, key), y_label=key,
                                     smooth=key in ("loss", "images_per_s")))
    return charts


def training_curves(ctx: RunContext) -> str:
    """Loss and learning rate against step (and throughput, gradient norm when logged)."""
    charts = _charts(ctx, list(_TRAINING), _TRAINING)
    if not charts:
        raise NotAvailable("metrics.jsonl has no loss or learning-rate values")
    skipped = getattr(ctx, "skipped_metric_lines", 0)
    note = f'<p class="note">{skipped} unreadable line(s) of metrics.jsonl were skipped.</p>' if skipped else ""
    missing = [name for key, name in _TRAINING.items() if key in ("loss", "lr") and not ctx.metric_series(key)]
    note += "".join(f'<p class="not-available">not available: no {name} in metrics.jsonl</p>' for name in missing)
    return note + '<div class="charts">' + "".join(charts) + "</div>"


def monitor_curves(ctx: RunContext) -> str:
    """Collapse monitor (normalised std, effective rank), online probes and the method's own metrics."""
    keys = list(dict.fromkeys(key for record in ctx.metrics for key, value in record.items()
                              if key not in _BOOKKEEPING and key not in _TRAINING and finite(value)))
    # The collapse monitor first, then probes, then method metrics, each group alphabetical.
    keys.sort(key=lambda k: (0 if k.startswith("monitor/") else 1 if "probe" in k else 2, k))
    charts = _charts(ctx, keys, {"monitor/normalized_std": "normalized std of embeddings (healthy ~1, collapse 0)",
                                 "monitor/effective_rank": "effective rank of embeddings (RankMe)",
                                 "monitor/target_entropy": "teacher target entropy (nats; uniform targets: ln K)",
                                 "monitor/target_entropy_fraction": "teacher target entropy / ln K (uniform: 1)"})
    if not charts:
        raise NotAvailable("metrics.jsonl has no collapse-monitor, probe or method metrics (the monitor logs every "
                           "train.monitor_every steps when the method returns embeddings)")
    return '<div class="charts">' + "".join(charts) + "</div>"


# ------------------------------------------------------------------------------------------------ results
# --------------------------------------------------------------------------------------- embeddings map
def embedding_map(ctx: RunContext, projections: tuple[str, ...] = ("pca",)) -> str:
    """Test-split features (at most MAX_MAP_POINTS) in 2-D, coloured by label."""
    split, source = ctx.query_split()
    features, labels, indices = ctx.features(split)
    if len(features) > MAX_MAP_POINTS:  # evenly spaced, so every class keeps its share
        keep = np.linspace(0, len(features) - 1, MAX_MAP_POINTS).round().astype(np.int64)
        features, indices = features[keep], indices[keep]
        labels = None if labels is None else labels[keep]
    names = ctx.class_names
    point_names = ([f"#{i}: {names[label] if names else label}" for i, label in zip(indices, labels)]
                   if labels is not None else [f"#{i}" for i in indices])
    plots, failures = [], []
    for method in projections:
        try:
            xy = project_2d(features, method, seed=ctx.config.seed)
        except Exception as error:  # one projection failing (e.g. UMAP not installed) leaves the others
            failures.append(f'<p class="not-available">not available: {escape(method)} map: {escape(str(error))}</p>')
            continue
        plots.append(scatter_plot([tuple(p) for p in xy.tolist()], None if labels is None else labels.tolist(),
                                  title=f"{method.upper()} of {len(features)} {split} features",
                                  class_names=names, point_names=point_names))
    if not plots:
        raise NotAvailable("no projection succeeded: " + "; ".join(failures))
    caption = ("coloured by label" if labels is not None
               else "the data has no labels, so the points have one colour")
    return (f'<p class="note">L2-normalised backbone features of the {split} split, {caption}.</p>'
            + "".join(failures) + '<div class="charts">' + "".join(plots) + "</div>")


# --------------------------------------------------------------------------------------------- retrieval
def _label_name(ctx: RunContext, label) -> str:
    names = ctx.class_names
    return names[int(label)] if names and 0 <= int(label) < len(names) else str(label)


def retrieval_grid(ctx: RunContext, queries: int = 6, top: int = 5) -> str:
    """A few test queries and their ``top`` nearest training images by cosine similarity."""
    not_for_other_kinds(ctx, "retrieved images")
    split, query_source = ctx.query_split()
    q_features, q_labels, q_indices = ctx.features(split)
    db_features, db_labels, db_indices = ctx.features("train")
    chosen = query_positions(q_labels, queries, len(q_features))
    q = torch.nn.functional.normalize(q_features[chosen].float(), dim=1)
    db = torch.nn.functional.normalize(db_features.float(), dim=1)
    similarity = q @ db.T
    if split == "train":  # unlabelled data: queries come from the database itself; never return the query
        similarity[torch.arange(len(chosen)), torch.tensor(chosen)] = -float("inf")
    best = similarity.topk(min(top, db.shape[0]), dim=1)
    size = ctx.image_size
    rows, hits, shown = [], 0, 0
    for row, position in enumerate(chosen):
        label = None if q_labels is None else q_labels[position]
        query_image = shown_input(query_source, int(q_indices[position]), size)
        cells = [img_tag(query_image, size=72, caption=f"query: {_label_name(ctx, label)}"
                         if label is not None else f"query #{q_indices[position]}")]
        for score, neighbour in zip(best.values[row].tolist(), best.indices[row].tolist()):
            image = shown_input(ctx.splits.train, int(db_indices[neighbour]), size)
            border, caption = None, f"#{db_indices[neighbour]} · {score:.3f}"
            if label is not None and db_labels is not None:
                correct = db_labels[neighbour] == label
                hits, shown = hits + int(correct), shown + 1
                border = _CORRECT if correct else _WRONG
                caption = f"{_label_name(ctx, db_labels[neighbour])} · {score:.3f}"
            cells.append(img_tag(image, size=72, caption=caption, border=border))
        rows.append('<div class="grid-row">' + "".join(cells) + "</div>")
    note = (f"{hits} of {shown} neighbours share the query's label (green frame; red: another label). "
            if shown else "")
    return (f'<p class="note">Queries from the {split} split, nearest neighbours among {len(db_features)} training '
            f"images by cosine similarity of the backbone's features (caption: {'label' if shown else 'image index'} "
            f"· similarity). {note}</p>"
            + '<div class="grid">' + "".join(rows) + "</div>")


# ----------------------------------------------------------------------------------------------- views
def _mask_overlay(view: torch.Tensor, visible_patches: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The view (C, H, W) in [0, 1] with its hidden patches greyed out, as a masked-image method hides them."""
    rows, cols = view.shape[-2] // patch_size, view.shape[-1] // patch_size
    visible = visible_patches.reshape(rows, cols).float()
    pixels = visible.repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1)
    return view * pixels + 0.5 * (1 - pixels) * torch.ones_like(view)


def _visible_patches(masks: dict, sample: int, position: int | None, num_patches: int) -> torch.Tensor | None:
    """Which patches of a masked view the encoder sees: (N,) bool, from whichever keys the strategy returns."""
    def pick(tensor):
        return tensor[sample] if position is None else tensor[sample, position]
    if "mask" in masks:
        return ~pick(masks["mask"]).bool()
    for key in ("visible", "context"):
        if key in masks:
            visible = torch.zeros(num_patches, dtype=torch.bool)
            visible[pick(masks[key]).long()] = True
            return visible
    return None


def augmented_views(ctx: RunContext, samples: int = 4) -> str:
    """The first training samples of epoch 0 through the method's own ViewSpec (views are seeded by run seed,
    epoch and sample index, so these are exactly the views the method trained on at its first step)."""
    not_for_other_kinds(ctx, "augmented views")
    cfg = ctx.config
    mean, std = ctx.normalization
    train = ctx.splits.train
    with torch.random.fork_rng(devices=[]):  # building a method draws initial weights; leave the caller's RNG
        method = build_run_method(cfg, train)  # as the run built it: same views, data.hflip included
    spec = method.views
    dataset = ViewDataset(train, spec, cfg.data.image_size, cfg.seed)
    # The sample order of epoch 0 depends on (seed, epoch) only, so batches of one give its first samples.
    sampler = EpochBatchSampler(len(train), 1, cfg.seed)
    order = [batch[0][1] for batch, _ in zip(sampler, range(samples))]
    batch = ViewCollate(Preprocess(cfg.data.image_size, mean, std), dataset.kind)([dataset[(0, index)] for index in order])
    shape = (1, -1) + (1,) * (batch["views"][0].ndim - 2)  # images (B, C, H, W) or volumes (B, C, D, H, W)
    mean_t, std_t = torch.tensor(mean).view(shape), torch.tensor(std).view(shape)
    views = [(v * std_t + mean_t).clamp(0, 1) for v in batch["views"]]  # undo the normalisation for display
    sizes = spec.view_sizes(cfg.data.image_size)
    masked_views = []
    if spec.masks is not None and spec.masks.dims == 2:  # 3-D masks (volumes) are not drawn on a middle slice
        masked_views = [spec.masks.views] if isinstance(spec.masks.views, int) else list(spec.masks.views)
    header = ["image"] + [f"view {v + 1} ({sizes[v]} px)" for v in range(len(views))]
    header += [f"view {v + 1} masked" for v in masked_views]
    rows = []
    for s, index in enumerate(order):
        cells = [img_tag(shown_input(train, index, cfg.data.image_size), size=72, caption=f"#{index}")]
        cells += [img_tag(views[v][s], size=max(24, round(72 * sizes[v] / cfg.data.image_size)))
                  for v in range(len(views))]
        for position, v in enumerate(masked_views):
            patches = (sizes[v] // spec.masks.patch_size) ** 2
            visible = _visible_patches(batch["masks"], s, None if isinstance(spec.masks.views, int) else position,
                                       patches)
            size = max(24, round(72 * sizes[v] / cfg.data.image_size))
            cells.append(img_tag(_mask_overlay(views[v][s], visible, spec.masks.patch_size), size=size)
                         if visible is not None else "no drawable mask key")
        rows.append(cells)
    note = (f'<p class="note">{cfg.method}: {spec.num_views} view(s) per image, shown at relative size; '
            "un-normalised for display (photometric changes, crops and flips are as the method saw them).</p>")
    return note + table(header, rows, "views")


# --------------------------------------------------------------------------------- saved images (MAE ...)
def run_images(ctx: RunContext) -> str:
    """PNG files the run saved itself (MAE reconstructions.png and the like), embedded."""
    files = ctx.images_saved_by_run()
    if not files:
        raise NotAvailable("the run saved no images (*.png); masked-image methods such as MAE save "
                           "reconstructions.png")
    parts = []
    for path in files:
        name = escape(str(path.relative_to(ctx.run_dir)))
        if path.stat().st_size > MAX_EMBEDDED_IMAGE_BYTES:
            parts.append(f'<p class="not-available">not available: {name} is larger than '
                         f"{MAX_EMBEDDED_IMAGE_BYTES // 2 ** 20} MiB; open it from the run directory</p>")
            continue
        try:
            uri = file_data_uri(path)
        except Exception as error:  # a truncated PNG from a killed run
            parts.append(f'<p class="not-available">not available: {name} cannot be read ({escape(str(error))})</p>')
            continue
        parts.append(f'<figure class="saved"><img src="{uri}" alt="{name}"><figcaption>{name}</figcaption></figure>')
    return "".join(parts)


# ------------------------------------------------------------------------------------------ ViT attention
def vit_attention(ctx: RunContext, count: int = 6) -> str:
    """Class-token attention of the last block over the patches, for a few test images."""
    backbone = ctx.backbone
    if not isinstance(backbone, ViTBackbone):
        raise NotAvailable(f"the backbone ({backbone.spec.get('name', type(backbone).__name__)}) is not a ViT")
    split, source = ctx.query_split()
    labels = getattr(source, "labels", None)
    chosen = query_positions(None if labels is None else np.asarray(labels), count, len(source))
    preprocess = ctx.preprocess
    size = preprocess.image_size
    raw = [source.get_image(i) for i in chosen]
    images = torch.stack([preprocess(image) for image in raw])
    try:
        attention = class_token_attention(backbone, images)
    except ValueError as error:  # no class token, or an image size that is not a multiple of the patch size
        raise NotAvailable(str(error)) from None
    cells = []
    for image, heat, index in zip(raw, attention, chosen):
        shown = center_square(image, size)
        label = f" · {_label_name(ctx, labels[index])}" if labels is not None else ""
        cells.append('<div class="pair">' + img_tag(shown, size=96, caption=f"#{index}{label}")
                     + img_tag(heatmap_overlay(shown, heat), size=96, caption="attention") + "</div>")
    grid = attention.shape[-2:]
    return (f'<p class="note">Last block, class-token query, mean over {backbone.model.blocks[-1].attn.num_heads} '
            f"heads, over the {grid[0]}x{grid[1]} patch grid of {split} images (yellow: most attended).</p>"
            f'<div class="grid-row">{"".join(cells)}</div>')


SectionBuilder = Callable[[RunContext], str]

# (anchor id, title, builder) in page order.
SECTIONS: list[tuple[str, str, SectionBuilder]] = [
    ("overview", "Run", overview),
    ("data", "Data: skipped files, bands and pixel window", data_section),
    ("kind-data", "What the data looks like (tables, point clouds, graphs)", kind_data),
    ("training", "Loss and learning rate", training_curves),
    ("monitors", "Online probe and collapse monitor", monitor_curves),
    ("results", "Final metrics and baselines", results_table),
    ("embedding-map", "Embedding map", embedding_map),
    ("retrieval", "Nearest-neighbour retrieval", retrieval_grid),
    ("zero-shot", "Zero-shot classification", zero_shot_classification),
    ("image-text-retrieval", "Image-text retrieval", image_text_retrieval),
    ("views", "Augmented views as the method saw them", augmented_views),
    ("reconstructions", "MAE reconstructions and images saved by the run", run_images),
    ("attention", "ViT attention maps", vit_attention),
]

__all__ = ["SECTIONS", "SectionBuilder"]
