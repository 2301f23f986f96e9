"""Representation diagnostics of the test features: RankMe, per-dimension std, alignment, uniformity
(:mod:`selfsup.eval.diagnostics`)."""
from __future__ import annotations

from selfsup.eval.diagnostics import representation_diagnostics
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import FeatureSplits, Protocol, Settings


class DiagnosticsSettings(Settings):
    seed: int = 0  # fixed: the same sample pairs for every run


@PROTOCOLS.register("diagnostics")
class Diagnostics(Protocol):
    settings = DiagnosticsSettings
    family = ("effective_rank", "normalized_std", "alignment", "uniformity")
    order = 90
    plain_numbers = frozenset(family)
    title = "representation diagnostics"
    description = ("effective rank (RankMe), normalised per-dimension std (collapse: 0), alignment of same-class "
                   "pairs and uniformity on the sphere (Wang & Isola, ICML 2020); lower alignment and uniformity "
                   "are better")
    about = {"split": "test", "alignment_positives": "same-class pairs"}

    def run(self, f: FeatureSplits, s: DiagnosticsSettings, seed: int, log=None) -> dict:
        return representation_diagnostics(f.test, f.test_labels, seed=s.seed)
