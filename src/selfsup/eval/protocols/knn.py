"""kNN: temperature-weighted votes of the ``k`` most similar training features (:mod:`selfsup.eval.knn`)."""
from __future__ import annotations

from pydantic import Field, PositiveInt

from selfsup.eval.knn import knn_accuracy
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import FeatureSplits, Protocol, Settings


class KNNSettings(Settings):
    k: list[PositiveInt] = Field(default_factory=lambda: [20, 200])  # a sweep: [1, 5, 10, 20, 50, 100, 200]
    temperature: float = Field(0.07, gt=0)


@PROTOCOLS.register("knn")
class KNN(Protocol):
    settings = KNNSettings
    family = ("knn_top1@",)
    order = 10
    scope_keys = frozenset({"k"})
    default = True
    title = "kNN"
    description = ("weighted k-nearest neighbours (Wu et al., CVPR 2018): cosine similarity of L2-normalised "
                   "features, the k most similar training images vote for their label with weight exp(cos / T)")
    about = {"similarity": "cosine"}

    def run(self, f: FeatureSplits, s: KNNSettings, seed: int, log=None) -> dict:
        accuracy = knn_accuracy(f.train, f.train_labels, f.test, f.test_labels, ks=s.k, temperature=s.temperature)
        return {f"knn_top1@{k}": acc for k, acc in accuracy.items()}
