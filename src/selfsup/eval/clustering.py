"""k-means clustering of frozen features, scored against the labels with NMI and ARI.

The features of the evaluation split are L2-normalised (the geometry every other protocol here uses) and
clustered by k-means with ``k`` = the number of classes present (Lloyd's algorithm with k-means++ seeding,
``n_init`` restarts, the lowest inertia kept; scikit-learn's ``KMeans`` with a fixed ``random_state``). The
clusters are compared with the labels by normalised mutual information (Strehl & Ghosh, "Cluster Ensembles",
JMLR 2002; arithmetic-mean normalisation) and the adjusted Rand index (Hubert & Arabie, "Comparing
Partitions", J. Classification 1985). Both are 1 for a clustering that equals the classes up to renaming,
and about 0 for one unrelated to them (ARI is chance-corrected and can be slightly negative).
This is the clustering evaluation used for self-supervised features by e.g. DeepCluster (Caron et al.,
ECCV 2018) and SCAN (Van Gansbeke et al., ECCV 2020).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["kmeans_scores"]


def kmeans_scores(features, labels, *, num_clusters: int | None = None, seed: int = 0, n_init: int = 10,
                  max_iter: int = 300) -> dict[str, float]:
    """``{"nmi": ..., "ari": ...}`` of k-means clusters of ``features`` against ``labels``."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    x = torch.as_tensor(features).float()
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.numel():
        raise ValueError(f"expected (N, D) features and N labels, got {tuple(x.shape)} and {y.numel()} labels")
    k = int(num_clusters) if num_clusters is not None else int(torch.unique(y).numel())
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"cannot make {k} clusters of {x.shape[0]} samples")
    x = F.normalize(x, dim=1).double().numpy()  # float64: sklearn's k-means is then bit-stable across runs
    assignment = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=int(seed)).fit_predict(x)
    y = y.numpy()
    return {"nmi": float(normalized_mutual_info_score(y, assignment)),
            "ari": float(adjusted_rand_score(y, assignment))}
