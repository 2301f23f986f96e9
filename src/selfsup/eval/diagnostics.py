"""Representation health diagnostics after training (the online collapse monitor and its two measures are
the engine's: :mod:`selfsup.engine.monitor`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfsup.engine.monitor import effective_rank, normalized_std


@torch.no_grad()
def alignment(embeddings: torch.Tensor, positives: torch.Tensor, alpha: float = 2.0) -> float:
    """Alignment (Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
    Uniformity on the Hypersphere", ICML 2020): ``E ||f(x) - f(y)||^alpha`` over positive pairs, row ``i`` of
    ``embeddings`` paired with row ``i`` of ``positives``, both L2-normalised. 0 when positives coincide;
    lower is better."""
    if embeddings.shape != positives.shape or embeddings.ndim != 2:
        raise ValueError(f"expected two (N, D) tensors of the same shape, got {tuple(embeddings.shape)} and "
                         f"{tuple(positives.shape)}")
    x, y = F.normalize(embeddings.float(), dim=1), F.normalize(positives.float(), dim=1)
    return float((x - y).norm(dim=1).pow(alpha).mean())


@torch.no_grad()
def uniformity(embeddings: torch.Tensor, t: float = 2.0, max_samples: int = 4096, seed: int = 0) -> float:
    """Uniformity (Wang & Isola, ICML 2020): ``log E exp(-t ||f(x) - f(y)||^2)`` over distinct pairs of
    L2-normalised embeddings. 0 for complete collapse, about ``-2t`` for points spread evenly over a
    high-dimensional sphere; lower is better.

    The pair count grows as N^2, so at most ``max_samples`` rows (a fixed-seed subsample) are used.
    """
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"uniformity needs at least two (N, D) embeddings, got {tuple(embeddings.shape)}")
    z = embeddings
    if z.shape[0] > max_samples:
        z = z[torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]]
    z = F.normalize(z.double(), dim=1)
    squared = torch.pdist(z, p=2).pow(2)
    # log-mean-exp through logsumexp: stays finite for any t.
    return float(torch.logsumexp(-t * squared, dim=0)) - math.log(squared.numel())


@torch.no_grad()
def same_class_pairs(labels: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample paired with a different random sample of its class (classes of one sample are left out).

    On cached features there are no augmented views, so the positives of :func:`alignment` are taken to be
    same-class samples: a label-based variant of the measure, comparable between backbones on the same data.
    """
    labels = torch.as_tensor(labels).reshape(-1).long()
    gen = torch.Generator().manual_seed(seed)
    anchors, partners = [], []
    for c in torch.unique(labels).tolist():
        members = (labels == c).nonzero().squeeze(1)
        n = members.numel()
        if n < 2:
            continue
        # A random non-zero shift within the class: never pairs a sample with itself.
        shift = torch.randint(1, n, (n,), generator=gen)
        anchors.append(members)
        partners.append(members[(torch.arange(n) + shift) % n])
    if not anchors:
        raise ValueError("no class has two samples: no same-class pairs")
    return torch.cat(anchors), torch.cat(partners)


def representation_diagnostics(features: torch.Tensor, labels=None, seed: int = 0) -> dict[str, float]:
    """Effective rank (RankMe), normalized per-dimension std, uniformity and (with labels) same-class alignment."""
    features = torch.as_tensor(features).float()
    out = {"effective_rank": effective_rank(features), "normalized_std": normalized_std(features),
           "uniformity": uniformity(features, seed=seed)}
    if labels is not None:
        anchors, partners = same_class_pairs(labels, seed=seed)
        out["alignment"] = alignment(features[anchors], features[partners])
    return out
