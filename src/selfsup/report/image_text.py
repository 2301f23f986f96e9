"""The report's sections for an image-text run (clip, siglip, convirt, slip: the methods that save both towers).

- *Zero-shot classification*: the held-out images classified by the text tower's class embeddings, exactly as
  the ``zero_shot`` protocol does (the same class names and prompt templates, prompt ensembling): the prompts,
  top-1 accuracy, the confusion matrix and a few misclassified images.
- *Image-text retrieval*: a few held-out images with their own captions and the captions the model retrieves
  for them, and a few captions with the images they retrieve.

Both read :attr:`RunContext.held_out_pairs` (at most ``MAX_IMAGE_TEXT_IMAGES`` test images, embedded once by the
image tower with towers.json's preprocessing), so the work stays a few seconds on a CPU. For any other run that
piece raises NotAvailable ("no text tower: not an image-text run") and both sections say so.
"""
from __future__ import annotations

from html import escape

import numpy as np
import torch

from selfsup.data.text import has_text
from selfsup.eval.image_text import (class_embeddings, confusion_matrix, encode_texts, image_text_recall,
                                     zero_shot_predictions)
from selfsup.eval.protocols.zero_shot import class_names_for, templates_for
from selfsup.report.context import NotAvailable, RunContext, finite, query_positions
from selfsup.report.html import table
from selfsup.report.images import center_square, img_tag

# The retrieval grid's colours: green frames a match (its own image), red anything else.
_MATCH, _WRONG = "#2ca02c", "#d62728"
# A matrix wider than this no longer reads as a table; larger label sets show their most frequent classes.
MAX_MATRIX_CLASSES = 30
# Class names listed in full up to this many; longer lists fold away under <details>.
MAX_LISTED_NAMES = 30
THUMB_PX = 72


def _thumbnail(source, position: int, size: int, caption: str, border: str | None = None) -> str:
    return img_tag(center_square(source.get_image(position), size), size=THUMB_PX, caption=caption, border=border)


def _name(names: list[str], label: int) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


# ------------------------------------------------------------------------------------------------ zero-shot
def confusion_table(counts: torch.Tensor, names: list[str]) -> str:
    """(C, C) counts (rows: true class, columns: predicted) as an HTML table shaded by count, the diagonal
    framed in green. Above :data:`MAX_MATRIX_CLASSES` classes only the most frequent true classes are shown,
    and an "other" column keeps each row's total."""
    totals = counts.sum(dim=1)
    shown = list(range(len(names)))
    if len(names) > MAX_MATRIX_CLASSES:
        shown = sorted(totals.topk(MAX_MATRIX_CLASSES).indices.tolist())
    cells = counts[shown][:, shown]
    other = totals[shown] - cells.sum(dim=1)
    peak = max(int(cells.max()), 1)
    head = ('<th>true \\ predicted</th>' + "".join(f"<th>{escape(_name(names, c))}</th>" for c in shown)
            + ("<th>other</th>" if len(shown) < len(names) else "") + "<th>images</th><th>correct</th>")
    rows = []
    for r, true_class in enumerate(shown):
        row = f"<th>{escape(_name(names, true_class))}</th>"
        for c, predicted in enumerate(shown):
            count = int(cells[r, c])
            shade = count / peak
            style = f"text-align:right;background:rgba(31,119,180,{0.85 * shade:.2f})"
            style += ";color:#fff" if shade > 0.5 else ";color:#bbb" if count == 0 else ""
            if predicted == true_class:  # the diagonal: the correct predictions
                style += f";outline:2px solid {_MATCH};outline-offset:-2px;font-weight:600"
            tip = f"true {_name(names, true_class)}, predicted {_name(names, predicted)}: {count}"
            row += f'<td class="cm" style="{style}" title="{escape(tip)}">{count}</td>'
        if len(shown) < len(names):
            row += f'<td class="cm" style="text-align:right">{int(other[r])}</td>'
        total = int(totals[true_class])
        correct = f"{int(counts[true_class, true_class]) / total:.0%}" if total else "&ndash;"
        row += f'<td style="text-align:right">{total}</td><td style="text-align:right">{correct}</td>'
        rows.append(f"<tr>{row}</tr>")
    note = (f'<p class="note">The {len(shown)} of {len(names)} classes with the most held-out images; "other": '
            "predictions of any class not shown.</p>" if len(shown) < len(names) else "")
    return (note + f'<table class="confusion"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            "</table>")


def _spread_over_classes(positions: list[int], labels: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` of ``positions``, taking one per true class in turn, so one class's errors do not fill
    the row."""
    by_class: dict[int, list[int]] = {}
    for position in positions:
        by_class.setdefault(int(labels[position]), []).append(position)
    ranked = sorted((rank, label, position) for label, members in by_class.items()
                    for rank, position in enumerate(members))
    return [position for _, _, position in ranked[:count]]


def _prompts(templates: list[str], names: list[str]) -> str:
    listed = ", ".join(f"<code>{escape(n)}</code>" for n in names)
    if len(names) > MAX_LISTED_NAMES:
        listed = f"<details><summary>{len(names)} class names</summary>{listed}</details>"
    return (f'<p class="note">{len(templates)} prompt template(s) x {len(names)} class names = '
            f"{len(templates) * len(names)} prompts; a class's embedding is the normalised mean of its prompts' "
            "(prompt ensembling), and each image takes the class whose embedding is nearest (cosine).</p>"
            "<table class=\"facts\"><tr><th>templates</th><td>"
            + "<br>".join(f"<code>{escape(t)}</code>" for t in templates)
            + f"</td></tr><tr><th>class names</th><td>{listed}</td></tr></table>")


def _evaluated_top1(ctx: RunContext) -> str:
    """The evaluation's own zero-shot top-1 (on the whole test split), when results.json has it."""
    try:
        value = ctx.results["results"].get("pretrained", {}).get("zero_shot_top1")
    except NotAvailable:
        return ""
    return f"; the evaluation measured {value:.1%} on the whole test split (results.json)" if finite(value) else ""


def zero_shot_classification(ctx: RunContext, misclassified: int = 8) -> str:
    """The prompts, top-1 accuracy, the confusion matrix and a few misclassified held-out images."""
    pairs = ctx.held_out_pairs
    source, test = pairs.source, ctx.splits.test
    if source.labels is None:
        raise NotAvailable("the held-out images have no labels to classify")
    settings = ctx.config.eval.zero_shot  # the protocol's own settings, so the report shows what it measured
    try:  # from the whole split: a subset is a new source without the data's zero_shot_templates
        names, templates = class_names_for(settings, test), templates_for(settings, test)
    except (ValueError, FileNotFoundError) as error:
        raise NotAvailable(str(error)) from None
    classes = class_embeddings(ctx.towers, names, templates, device=ctx.device)
    similarities = zero_shot_predictions(pairs.image_embeddings, classes)
    labels = np.asarray(source.labels)
    predicted = similarities.argmax(dim=1).numpy()
    counts = confusion_matrix(similarities, torch.as_tensor(labels))
    accuracy = float((predicted == labels).mean())
    summary = (f'<p>Top-1 accuracy <b>{accuracy:.1%}</b> on {len(labels)} held-out images (chance '
               f"{1 / len(names):.1%}){escape(_evaluated_top1(ctx))}.</p>")
    wrong = _spread_over_classes(np.flatnonzero(predicted != labels).tolist(), labels, misclassified)
    size = ctx.towers_preprocess.image_size
    examples = "".join(_thumbnail(source, p, size, f"#{pairs.indices[p]}: {_name(names, int(labels[p]))} "
                                                   f"\u2192 {_name(names, int(predicted[p]))}", _WRONG)
                       for p in wrong)
    examples = ('<p class="note">Misclassified (caption: true \u2192 predicted class):</p>'
                f'<div class="grid-row">{examples}</div>' if wrong
                else '<p class="note">No image is misclassified.</p>')
    return (summary + _prompts(templates, names)
            + '<p class="note">Confusion matrix: rows are the true class, columns the predicted one; darker cells '
              "hold more images, the diagonal (framed) the correct ones.</p>"
            + confusion_table(counts, names) + examples)


# ------------------------------------------------------------------------------------------------ retrieval
def _distinct_best(scores: torch.Tensor, texts: list[str], top: int) -> list[int]:
    """The ``top`` best-scoring texts with distinct wording: a caption many images share ("a handwritten 3")
    would otherwise fill every place with copies of one sentence."""
    chosen, seen = [], set()
    for j in scores.argsort(descending=True).tolist():
        if texts[j] not in seen:
            seen.add(texts[j])
            chosen.append(j)
            if len(chosen) == top:
                break
    return chosen


def _image_label(source, names: list[str] | None, position: int, index: int) -> str:
    if source.labels is None or not names:
        return f"#{index}"
    return f"#{index} \u00b7 {_name(names, int(source.labels[position]))}"


def image_text_retrieval(ctx: RunContext, image_queries: int = 6, caption_queries: int = 4, top: int = 3) -> str:
    """Held-out images with their captions and the ``top`` captions they retrieve; held-out captions and the
    ``top`` images they retrieve; Recall@1/5 over the same images and captions."""
    pairs = ctx.held_out_pairs
    source = pairs.source
    if not has_text(source):
        raise NotAvailable("the held-out images have no captions")
    captions_of = [source.get_text(p) for p in range(len(source))]
    texts = [text for captions in captions_of for text in captions]
    owner = torch.tensor([p for p, captions in enumerate(captions_of) for _ in captions])
    text_embeddings = encode_texts(ctx.towers, texts, batch_size=ctx.config.eval.batch_size, device=ctx.device)
    similarities = pairs.image_embeddings @ text_embeddings.T  # (images, captions)
    recall = image_text_recall(pairs.image_embeddings, text_embeddings, owner, recall_at=(1, 5))
    names = list(source.classes) if getattr(source, "classes", None) else None
    size = ctx.towers_preprocess.image_size
    labels = None if source.labels is None else np.asarray(source.labels)

    image_rows = []
    for p in query_positions(labels, image_queries, len(source)):
        own = set(captions_of[p])
        retrieved = []
        for j in _distinct_best(similarities[p], texts, top):
            # an identical sentence of another image is as right as the image's own copy of it
            of = _image_label(source, names, int(owner[j]), int(pairs.indices[owner[j]]))
            mark = (f' <b style="color:{_MATCH}">\u2713 its own</b>' if texts[j] in own
                    else f' <span class="note">(of {escape(of)})</span>')
            retrieved.append(f"<li>{float(similarities[p, j]):.3f} \u00b7 {escape(texts[j])}{mark}</li>")
        image_rows.append([_thumbnail(source, p, size, _image_label(source, names, p, int(pairs.indices[p]))),
                           "<ul>" + "".join(f"<li>{escape(c)}</li>" for c in captions_of[p]) + "</ul>",
                           "<ol>" + "".join(retrieved) + "</ol>"])

    caption_rows = []
    for k, p in enumerate(np.linspace(0, len(source) - 1, caption_queries + 2).round().astype(int)[1:-1].tolist()):
        j = int(np.flatnonzero(owner.numpy() == p)[k % len(captions_of[p])])  # a different phrasing each time
        of = _image_label(source, names, p, int(pairs.indices[p]))
        cells = [f'\u201c{escape(texts[j])}\u201d<br><span class="note">caption of {escape(of)}</span>']
        best = similarities[:, j].topk(min(top, len(source)))
        for score, q in zip(best.values.tolist(), best.indices.tolist()):
            match = "its own" if q == p else "same caption" if texts[j] in captions_of[q] else None
            caption = _image_label(source, names, q, int(pairs.indices[q])) + f" \u00b7 {score:.3f}"
            cells.append(_thumbnail(source, q, size, caption + (f" \u00b7 {match}" if match else ""),
                                    _MATCH if match else _WRONG))
        caption_rows.append([cells[0], '<div class="grid-row">' + "".join(cells[1:]) + "</div>"])

    note = (f'<p class="note">Among {len(source)} held-out images and their {len(texts)} captions, by cosine '
            "similarity of the two towers' embeddings. Recall@k (a hit: one of the image's own captions, or the "
            f"caption's own image, among the k nearest): image \u2192 text R@1 {recall['image_to_text_recall@1']:.1%}, "
            f"R@5 {recall['image_to_text_recall@5']:.1%}; text \u2192 image R@1 "
            f"{recall['text_to_image_recall@1']:.1%}, R@5 {recall['text_to_image_recall@5']:.1%}.</p>")
    return (note + f"<h3>Image \u2192 text: the top {top} distinct captions</h3>"
            + table(["image", "its captions", "retrieved captions (similarity)"], image_rows, "image-to-text")
            + f"<h3>Text \u2192 image: the top {top} images</h3>"
            + '<p class="note">Green frame: the caption\'s own image (or one with the same caption); red: another '
              "image.</p>"
            + table(["caption", "retrieved images (similarity)"], caption_rows, "text-to-image"))


__all__ = ["confusion_table", "image_text_retrieval", "zero_shot_classification"]
