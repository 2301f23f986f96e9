"""Low-label: a linear probe on a class-balanced 1% / 10% of the training labels (:mod:`selfsup.eval.fewshot`)."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from selfsup.eval.fewshot import DEFAULT_LABEL_FRACTIONS, fraction_name, lowlabel_accuracy
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import FeatureSplits, Protocol, Settings


class LowlabelSettings(Settings):
    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: list(DEFAULT_LABEL_FRACTIONS))
    seed: int = 0  # fixed, like the few-shot seeds: every run of a comparison gets the same subset


@PROTOCOLS.register("lowlabel")
class Lowlabel(Protocol):
    settings = LowlabelSettings
    family = ("lowlabel_",)
    order = 60
    scope_keys = frozenset({"fractions"})
    title = "low-label"
    description = ("the linear probe trained on a class-balanced fraction of the training labels (SimCLR's 1% "
                   "and 10%), its weight decay chosen on a validation split of that subset")
    about = {"classifier": "linear probe on the class-balanced subset"}

    def run(self, f: FeatureSplits, s: LowlabelSettings, seed: int, log=None) -> dict:
        scores = lowlabel_accuracy(f.train, f.train_labels, f.test, f.test_labels, fractions=s.fractions,
                                   seed=s.seed)
        return {f"lowlabel_{fraction_name(p)}_top1": score["top1"] for p, score in scores.items()}
