"""2-D maps of features: PCA (always), t-SNE (scikit-learn, on request) and UMAP (when ``umap-learn`` is installed).

t-SNE is not a default: on 1,000 points it took about 50 s on the 2 shared CPU cores this was developed on,
too slow to add to the end of every run. UMAP joins the defaults when it is installed (it is an optional
extra, never imported at module level).
"""
from __future__ import annotations

import importlib.util

import numpy as np
import torch

PROJECTIONS = ("pca", "tsne", "umap")


def default_projections() -> tuple[str, ...]:
    return ("pca", "umap") if importlib.util.find_spec("umap") is not None else ("pca",)


def project_2d(features: torch.Tensor, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) coordinates. Features are L2-normalised first, as the kNN protocol sees them
    (cosine geometry), so the map shows the neighbourhoods that the evaluation scores."""
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection '{method}'; choose from {', '.join(PROJECTIONS)}")
    x = torch.nn.functional.normalize(features.float(), dim=1)
    if len(x) < 3:
        raise ValueError(f"a 2-D map needs at least 3 points, got {len(x)}")
    if method == "pca":
        centred = x - x.mean(dim=0, keepdim=True)
        # Exact SVD: the map is small (<= a few thousand x feature width) and must not depend on a random sketch.
        _, _, right = torch.linalg.svd(centred, full_matrices=False)
        components = right[:2].T
        if components.shape[1] < 2:  # 1-D features: put them on a line
            components = torch.cat([components, torch.zeros_like(components)], dim=1)
        return (centred @ components).numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
        return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x.numpy())
    try:
        import umap
    except ImportError:
        raise ValueError("UMAP needs the optional package umap-learn (pip install umap-learn)") from None
    return umap.UMAP(n_components=2, random_state=seed).fit_transform(x.numpy())
