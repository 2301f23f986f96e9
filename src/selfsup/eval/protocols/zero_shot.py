"""Zero-shot classification with an image-text model's towers (:mod:`selfsup.eval.image_text`)."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, PositiveInt

from selfsup.eval.image_text import (DEFAULT_TEMPLATES, class_embeddings, encode_images, zero_shot_predictions,
                                     zero_shot_scores)
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import ImageTextTask, Protocol, Settings


class ZeroShotSettings(Settings):
    # None: the data's own (a source's ``zero_shot_templates``, e.g. the captioned digits'), else CLIP's generic
    templates: list[str] | None = None
    # None: the data's class names (class folders, a manifest's labels); or a list, or a text file, one per line
    class_names: list[str] | str | None = None
    top_k: list[PositiveInt] = Field(default_factory=lambda: [1, 5])


def class_names_for(settings: ZeroShotSettings, source) -> list[str]:
    names = settings.class_names
    if isinstance(names, str):
        path = Path(names).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"eval.zero_shot.class_names: {path} is not a file (one class name per line)")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    names = names or getattr(source, "classes", None)
    if not names:
        raise ValueError("zero-shot classification needs class names: labelled data (class folders, a label "
                         "column) or eval.zero_shot.class_names")
    if len(names) != len(source.classes or names):
        raise ValueError(f"eval.zero_shot.class_names has {len(names)} names for {len(source.classes)} classes")
    return list(names)


def templates_for(settings: ZeroShotSettings, source) -> list[str]:
    templates = list(settings.templates or getattr(source, "zero_shot_templates", None) or DEFAULT_TEMPLATES)
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"eval.zero_shot.templates: every template needs a '{{}}' for the class name: {bad}")
    return templates


@PROTOCOLS.register("zero_shot")
class ZeroShot(Protocol):
    settings = ZeroShotSettings
    inputs = "image_text"
    family = ("zero_shot_top",)
    order = 80
    scope_keys = frozenset({"top_k"})
    raw_pixels = False
    uses_run_seed = False
    title = "zero-shot"
    description = ("class names written into prompt templates, embedded by the text tower and averaged per class; "
                   "each test image takes the class whose embedding is nearest (CLIP, Radford et al. 2021)")
    about = {"similarity": "cosine", "prompt_ensembling": "mean of normalized prompt embeddings"}
    test_settings = {"top_k": [1]}

    def run(self, task: ImageTextTask, s: ZeroShotSettings, seed: int, log=None) -> dict:
        test = task.splits.test
        if test.labels is None:
            return {}
        classes = class_embeddings(task.towers, class_names_for(s, test), templates_for(s, test), device=task.device)
        images = encode_images(task.towers, test, task.preprocess, batch_size=task.batch_size, device=task.device)
        return zero_shot_scores(zero_shot_predictions(images, classes), test.labels, top_k=s.top_k)
