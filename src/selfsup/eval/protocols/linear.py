"""Linear probe: logistic regression on frozen features, L2 chosen on a validation split (:mod:`selfsup.eval.linear`)."""
from __future__ import annotations

from pydantic import Field

from selfsup.eval.linear import linear_probe
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import FeatureSplits, Protocol, Settings


class LinearSettings(Settings):
    val_fraction: float = Field(0.1, gt=0, lt=1)  # of every training class, held out to choose the weight decay


@PROTOCOLS.register("linear")
class Linear(Protocol):
    settings = LinearSettings
    family = ("linear_",)
    order = 20
    not_scores = frozenset({"linear_weight_decay"})  # chosen on the validation split: a setting, not a score
    default = True
    title = "linear probe"
    description = ("multinomial logistic regression on frozen, standardised features (L-BFGS); the weight decay "
                   "is chosen on a validation split carved from the training labels, never on the test split")

    def run(self, f: FeatureSplits, s: LinearSettings, seed: int, log=None) -> dict:
        probe = linear_probe(f.train, f.train_labels, f.test, f.test_labels, val_fraction=s.val_fraction, seed=seed)
        return {"linear_top1": probe["top1"], "linear_weight_decay": probe["weight_decay"]}

    def record(self, s: LinearSettings, seed: int) -> str:
        # A sentence, as results.json has always held it (so runs evaluated before stay comparable).
        return (f"logistic regression on frozen standardized features, L2 chosen on a {100 * s.val_fraction:g}% "
                "validation split of the training labels")
