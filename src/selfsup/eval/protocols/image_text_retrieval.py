"""Image-to-text and text-to-image retrieval on the held-out pairs (:mod:`selfsup.eval.image_text`)."""
from __future__ import annotations

import torch
from pydantic import Field, PositiveInt

from selfsup.data import has_text
from selfsup.eval.image_text import encode_images, encode_texts, image_text_recall
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import ImageTextTask, Protocol, Settings


class ImageTextRetrievalSettings(Settings):
    recall_at: list[PositiveInt] = Field(default_factory=lambda: [1, 5, 10])
    max_pairs: PositiveInt | None = 5000  # held-out images used (the first ones); None: all


@PROTOCOLS.register("image_text_retrieval")
class ImageTextRetrieval(Protocol):
    settings = ImageTextRetrievalSettings
    inputs = "image_text"
    family = ("image_to_text_recall@", "text_to_image_recall@")
    order = 85
    scope_keys = frozenset({"recall_at"})
    raw_pixels = False
    title = "image-text retrieval"
    description = ("each held-out image queries every held-out caption (a hit: one of its own captions among the "
                   "k nearest) and each caption every image: Recall@k in both directions")
    about = {"similarity": "cosine", "queries": "test", "database": "test"}
    test_settings = {"recall_at": [1, 5]}

    def run(self, task: ImageTextTask, s: ImageTextRetrievalSettings, seed: int, log=None) -> dict:
        test = task.splits.test
        if not has_text(test):  # held-out images without captions (e.g. zero-shot on a class-folder dataset)
            return {}
        count = len(test) if s.max_pairs is None else min(len(test), s.max_pairs)
        texts, owner = [], []
        for index in range(count):
            captions = test.get_text(index)
            texts += captions
            owner += [index] * len(captions)
        images = encode_images(task.towers, test, task.preprocess, batch_size=task.batch_size, device=task.device)
        text_embeddings = encode_texts(task.towers, texts, batch_size=task.batch_size, device=task.device)
        return image_text_recall(images[:count], text_embeddings, torch.tensor(owner), recall_at=s.recall_at)
