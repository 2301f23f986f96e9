"""k-means: clusters of the test features (k = classes) against the labels, NMI and ARI (:mod:`selfsup.eval.clustering`)."""
from __future__ import annotations

from selfsup.eval.clustering import kmeans_scores
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import FeatureSplits, Protocol, Settings


class KMeansSettings(Settings):
    seed: int = 0  # fixed: the same restarts for every run, so the scores are functions of the features alone


@PROTOCOLS.register("kmeans")
class KMeans(Protocol):
    settings = KMeansSettings
    family = ("kmeans_nmi", "kmeans_ari")
    order = 80
    title = "k-means"
    description = ("k-means (k = number of classes) of the L2-normalised test features, scored against the labels "
                   "by normalised mutual information and the adjusted Rand index")
    about = {"k": "number of classes", "split": "test"}

    def run(self, f: FeatureSplits, s: KMeansSettings, seed: int, log=None) -> dict:
        scores = kmeans_scores(f.test, f.test_labels, seed=s.seed)
        return {f"kmeans_{name}": value for name, value in scores.items()}
