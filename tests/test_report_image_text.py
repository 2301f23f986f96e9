"""The report's image-text sections: a clip run's report.html shows zero-shot classification (prompts, top-1,
a confusion matrix over the held-out images, misclassified examples) and image-text retrieval (images with their
captions and the captions they retrieve, captions and the images they retrieve); an image-only run's report
says both are not available and is otherwise as before."""
import json
import re

import numpy as np
import pytest
import torch

import selfsup
from selfsup.data.digits_captions import ZERO_SHOT_TEMPLATES
from selfsup.report import context as report_context
from selfsup.report.context import RunContext
from selfsup.report.image_text import (MAX_MATRIX_CLASSES, confusion_table, image_text_retrieval,
                                      zero_shot_classification)
from selfsup.report.page import REPORT_FILE, render_section
from selfsup.report.sections import SECTIONS
from selfsup.runs import load_run_config, open_run_data

pytest.importorskip("open_clip")

CLIP_TINY = ["method_options.embed_dim=16",
             "method_options.text_options={width: 32, heads: 2, layers: 1, context_length: 16}",
             "backbone.name=small_resnet", "backbone.options={widths: [8, 8, 16, 16], stem_stride: 1}",
             "data.image_size=16", "data.num_workers=0", "train.batch_size=16", "train.precision=fp32",
             "train.max_steps=3", "train.progress=false", "data.source=digits-captions", "eval.baselines=false"]
NO_TEXT_TOWER = "no text tower: not an image-text run"


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    return selfsup.train("clip", [*CLIP_TINY, f"runs_dir={tmp_path_factory.mktemp('runs')}", "name=clip"])


def sections_of(html: str) -> dict[str, str]:
    found = dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', html, flags=re.S))
    assert list(found) == [anchor for anchor, _, _ in SECTIONS]
    return found


def not_available(section_html: str) -> str | None:
    match = re.search(r'class="not-available">not available: ([^<]*)<', section_html)
    return match.group(1) if match else None


def matrix_counts(section_html: str) -> np.ndarray:
    """The confusion matrix's count cells, row by row."""
    table = re.search(r'<table class="confusion">(.*?)</table>', section_html, flags=re.S).group(1)
    rows = re.findall(r"<tr><th>[^<]*</th>(.*?)</tr>", table.split("<tbody>")[1], flags=re.S)
    return np.array([[int(n) for n in re.findall(r'<td class="cm"[^>]*>(\d+)</td>', row)] for row in rows])


def test_clip_report_shows_zero_shot_classification(clip_run):
    section = sections_of((clip_run / REPORT_FILE).read_text())["zero-shot"]
    assert not_available(section) is None, not_available(section)
    test = open_run_data(load_run_config(clip_run)).test
    counts = matrix_counts(section)
    assert counts.shape == (10, 10) and counts.sum() == len(test) == 1000  # every held-out image, once
    assert (counts.sum(axis=1) == np.bincount(test.labels, minlength=10)).all()  # rows are the true classes
    assert section.count("outline:2px solid") == 10  # the diagonal is framed
    for template in ZERO_SHOT_TEMPLATES:  # the data's own prompts, as the zero_shot protocol uses them
        assert f"<code>{template}</code>" in section
    assert all(f"<code>{name}</code>" in section for name in test.classes)
    accuracy = float(re.search(r"Top-1 accuracy <b>([\d.]+)%</b> on 1000 held-out images", section).group(1))
    assert accuracy == pytest.approx(100 * np.trace(counts) / counts.sum(), abs=0.05)
    evaluated = json.loads((clip_run / "results.json").read_text())["results"]["pretrained"]["zero_shot_top1"]
    assert accuracy == pytest.approx(100 * evaluated, abs=0.05)  # the same images and prompts as the evaluation
    wrong = re.findall(r'outline:3px solid #d62728[^>]*><figcaption>#(\d+): (\w+) \u2192 (\w+)</figcaption>', section)
    assert 1 <= len(wrong) <= 8  # three steps of training leave plenty of mistakes
    for index, true, predicted in wrong:
        assert test.classes[test.labels[int(index)]] == true and true != predicted


def test_clip_report_shows_image_text_retrieval(clip_run):
    section = sections_of((clip_run / REPORT_FILE).read_text())["image-text-retrieval"]
    assert not_available(section) is None, not_available(section)
    test = open_run_data(load_run_config(clip_run)).test
    captions = sum(len(test.get_text(i)) for i in range(len(test)))
    assert f"Among 1000 held-out images and their {captions} captions" in section
    image_to_text = re.search(r'<table class="image-to-text">(.*?)</table>', section, flags=re.S).group(1)
    rows = image_to_text.split("<tbody>")[1].split("<tr>")[1:]
    assert len(rows) == 6
    for row in rows:
        index = int(re.search(r"<figcaption>#(\d+) ", row).group(1))
        own = re.search(r"<ul>(.*?)</ul>", row).group(1)
        assert re.findall(r"<li>(.*?)</li>", own) == [c.replace("'", "&#x27;") for c in test.get_text(index)]
        retrieved = re.findall(r"<li>([\d.]+) \u00b7 ", re.search(r"<ol>(.*?)</ol>", row).group(1))
        assert len(retrieved) == 3 and retrieved == sorted(retrieved, reverse=True)
    text_to_image = re.search(r'<table class="text-to-image">(.*?)</table>', section, flags=re.S).group(1)
    rows = text_to_image.split("<tbody>")[1].split("<tr>")[1:]
    assert len(rows) == 4 and all(row.count("<img") == 3 for row in rows)
    for row in rows:
        caption = re.search(r"\u201c(.*?)\u201d", row).group(1)
        owner = int(re.search(r"caption of #(\d+)", row).group(1))
        assert caption in test.get_text(owner)


def test_image_only_run_report_says_both_sections_are_not_available(tmp_path):
    run = selfsup.train("demo", ["backbone.options={widths: [8, 8, 16, 16], stem_stride: 2}", "data.image_size=16",
                                 "train.max_steps=2", "train.batch_size=16", "data.num_workers=0",
                                 "train.progress=false", "eval.baselines=false", "eval.protocols=[knn]",
                                 f"runs_dir={tmp_path}", "name=demo"])
    sections = sections_of((run / REPORT_FILE).read_text())
    for anchor, title in (("zero-shot", "Zero-shot classification"), ("image-text-retrieval", "Image-text retrieval")):
        assert sections[anchor] == f'<h2>{title}</h2><p class="not-available">not available: {NO_TEXT_TOWER}</p>'
    for anchor in ("training", "results", "embedding-map", "retrieval", "views"):  # the rest as before
        assert not_available(sections[anchor]) is None, (anchor, not_available(sections[anchor]))


def test_large_held_out_splits_are_subsampled_evenly_with_the_datas_prompts(clip_run, monkeypatch):
    monkeypatch.setattr(report_context, "MAX_IMAGE_TEXT_IMAGES", 200)
    ctx = RunContext(clip_run, device="cpu")
    assert len(ctx.held_out_pairs.source) == 200 and ctx.held_out_pairs.indices[-1] == 999
    section = zero_shot_classification(ctx)
    assert matrix_counts(section).sum() == 200 and "on 200 held-out images" in section
    assert f"<code>{ZERO_SHOT_TEMPLATES[0]}</code>" in section  # a subset keeps the data's own templates
    assert "Among 200 held-out images" in image_text_retrieval(ctx)  # and its captions


def test_confusion_table_of_many_classes_keeps_row_totals():
    classes = MAX_MATRIX_CLASSES + 10
    counts = torch.randint(0, 5, (classes, classes))
    counts[3] += 50  # a frequent class: always among those shown
    html = confusion_table(counts, [f"class {c}" for c in range(classes)])
    shown = matrix_counts(html)
    assert shown.shape == (MAX_MATRIX_CLASSES, MAX_MATRIX_CLASSES + 1)  # + the "other" column
    assert "<th>class 3</th>" in html and sorted(shown.sum(axis=1)) == sorted(
        counts.sum(dim=1).topk(MAX_MATRIX_CLASSES).values.tolist())


def test_unreadable_towers_give_a_reason_not_a_crash(clip_run, tmp_path):
    broken = tmp_path / "clip"
    broken.mkdir()
    for name in ("config.yaml", "towers.json"):
        (broken / name).write_bytes((clip_run / name).read_bytes())
    (broken / "towers.safetensors").write_bytes(b"not safetensors")
    ctx = RunContext(broken, device="cpu")
    for anchor, title, builder in SECTIONS:
        if anchor in ("zero-shot", "image-text-retrieval"):
            reason = not_available(render_section(anchor, title, builder, ctx))
            assert reason and NO_TEXT_TOWER not in reason, reason
