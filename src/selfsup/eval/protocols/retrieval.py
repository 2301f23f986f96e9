"""Retrieval: test queries against the training images, Recall@k and mAP@R (:mod:`selfsup.eval.retrieval`)."""
from __future__ import annotations

from pydantic import Field, PositiveInt

from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import FeatureSplits, Protocol, Settings
from selfsup.eval.retrieval import DEFAULT_RECALL_AT, retrieval_metrics


class RetrievalSettings(Settings):
    recall_at: list[PositiveInt] = Field(default_factory=lambda: list(DEFAULT_RECALL_AT))


@PROTOCOLS.register("retrieval")
class Retrieval(Protocol):
    settings = RetrievalSettings
    family = ("retrieval_recall@", "retrieval_map")
    order = 70
    scope_keys = frozenset({"recall_at"})
    title = "retrieval"
    description = ("test images query the training images by cosine similarity: Recall@k (a same-class image "
                   "among the k nearest) and mAP@R (Musgrave et al., ECCV 2020)")
    about = {"similarity": "cosine", "queries": "test", "database": "train"}

    def run(self, f: FeatureSplits, s: RetrievalSettings, seed: int, log=None) -> dict:
        scores = retrieval_metrics(f.train, f.train_labels, f.test, f.test_labels, recall_at=s.recall_at)
        return {f"retrieval_{name}": value for name, value in scores.items()}
