"""Zero-shot classification and image-text retrieval with a model's two towers
(:class:`~selfsup.backbones.towers.ImageTextTowers`).

Zero-shot (Radford et al., ICML 2021, section 3.1.4): each class name is written into every prompt template
("a photo of a {}."), the text tower embeds the prompts, and a class's embedding is the normalized mean of its
prompts' (prompt ensembling); an image is assigned the class whose embedding is closest to its own.

Retrieval (the Flickr30k / COCO protocol): on the held-out pairs, each image queries all captions (image to
text: a hit when one of *its* captions is among the k nearest) and each caption queries all images (text to
image: a hit when its image is among the k nearest); Recall@k for both directions.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from selfsup.backbones.towers import ImageTextTowers
from selfsup.eval.features import extract_features
from selfsup.views.preprocess import Preprocess
from selfsup.views.text import tokenize

#: prompts for data that brings none (CLIP's most generic ones)
DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a photo of the {}.")


class _ImageEmbedder(nn.Module):
    """The image tower and its projection as one module, so the feature extractor can run it."""

    def __init__(self, towers: ImageTextTowers):
        super().__init__()
        self.towers = towers

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.towers.encode_image(images)


def encode_images(towers: ImageTextTowers, source, preprocess: Preprocess, *, batch_size: int = 256,
                  device="cpu") -> torch.Tensor:
    """(N, D) L2-normalized embeddings of every image of ``source``, in source order."""
    features, _ = extract_features(_ImageEmbedder(towers), source, **preprocess.to_json(), batch_size=batch_size,
                                   device=device)
    return torch.nn.functional.normalize(features, dim=1)


@torch.no_grad()
def encode_texts(towers: ImageTextTowers, texts: list[str], *, batch_size: int = 256, device="cpu") -> torch.Tensor:
    """(M, D) L2-normalized embeddings of ``texts`` (the towers' mode and device are restored afterwards)."""
    modes = {m: m.training for m in towers.modules()}
    home = towers.logit_scale.device
    towers.eval().to(device)
    try:
        chunks = [towers.encode_text(tokenize(texts[i:i + batch_size], towers.context_length).to(device)).float().cpu()
                  for i in range(0, len(texts), batch_size)]
    finally:
        towers.to(home)
        for m, training in modes.items():
            m.train(training)
    return torch.cat(chunks) if chunks else torch.empty(0, towers.embed_dim)


def class_embeddings(towers: ImageTextTowers, class_names: list[str], templates: list[str], *,
                     device="cpu") -> torch.Tensor:
    """(C, D): for each class, the normalized mean of its prompts' normalized embeddings (prompt ensembling)."""
    prompts = [template.format(name) for name in class_names for template in templates]
    embeddings = encode_texts(towers, prompts, device=device).view(len(class_names), len(templates), -1)
    return torch.nn.functional.normalize(embeddings.mean(dim=1), dim=1)


def zero_shot_predictions(image_embeddings: torch.Tensor, class_embeddings_: torch.Tensor) -> torch.Tensor:
    """(N, C) similarities of every image to every class (argmax = the prediction)."""
    return image_embeddings @ class_embeddings_.T


def zero_shot_scores(similarities: torch.Tensor, labels: torch.Tensor, top_k=(1, 5)) -> dict[str, float]:
    """``zero_shot_top{k}`` for each k below the number of classes (top-k accuracy)."""
    labels = torch.as_tensor(labels).long()
    scores = {}
    for k in top_k:
        if k <= similarities.shape[1]:
            top = similarities.topk(k, dim=1).indices
            scores[f"zero_shot_top{k}"] = float((top == labels[:, None]).any(dim=1).float().mean())
    return scores


def confusion_matrix(similarities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(C, C) counts: row = true class, column = zero-shot prediction."""
    classes = similarities.shape[1]
    predicted = similarities.argmax(dim=1)
    flat = torch.as_tensor(labels).long() * classes + predicted
    return torch.bincount(flat, minlength=classes * classes).view(classes, classes)


def image_text_recall(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, text_owner: torch.Tensor,
                      recall_at=(1, 5, 10)) -> dict[str, float]:
    """Recall@k in both directions; ``text_owner[j]`` is the index of the image caption j belongs to."""
    similarities = image_embeddings @ text_embeddings.T  # (N images, M texts)
    owner = torch.as_tensor(text_owner).long()
    deepest = max(recall_at)  # one top-k per direction; each Recall@k reads its first k columns
    nearest_texts = similarities.topk(min(deepest, similarities.shape[1]), dim=1).indices  # (N, k)
    nearest_images = similarities.T.topk(min(deepest, similarities.shape[0]), dim=1).indices  # (M, k)
    own_text = owner[nearest_texts] == torch.arange(similarities.shape[0])[:, None]
    own_image = nearest_images == owner[:, None]
    scores = {}
    for k in recall_at:
        scores[f"image_to_text_recall@{k}"] = float(own_text[:, :k].any(dim=1).float().mean())
        scores[f"text_to_image_recall@{k}"] = float(own_image[:, :k].any(dim=1).float().mean())
    return scores
