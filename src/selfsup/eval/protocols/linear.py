"""Linear probe: logistic regression on frozen features, L2 chosen on a validation split (:mod:`selfsup.eval.linear`)."""
from __future__ import annotations

from pydantic import Field

from selfsup.eval.linear import linear_probe, stratified_subset
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import FeatureSplits, Protocol, Settings


class LinearSettings(Settings):
    val_fraction: float = Field(0.1, gt=0, lt=1)  # of every training class, held out to choose the weight decay
    # The raw-pixel baseline's probe fits on a class-balanced subset of at most this many training images:
    # on CIFAR-10 its 3,072-wide inputs made it 85% of the whole evaluation (318 of 373 s). None: all of them.
    raw_pixels_max_train: int | None = Field(10_000, ge=10)


@PROTOCOLS.register("linear")
class Linear(Protocol):
    settings = LinearSettings
    family = ("linear_",)
    order = 20
    # Chosen on the validation split, and the size of a capped raw-pixel fit: settings, not scores.
    not_scores = frozenset({"linear_weight_decay", "linear_train_subset"})
    default = True
    title = "linear probe"
    description = ("multinomial logistic regression on frozen, standardised features (L-BFGS); the weight decay "
                   "is chosen on a validation split carved from the training labels, never on the test split")

    def run(self, f: FeatureSplits, s: LinearSettings, seed: int, log=None) -> dict:
        train, labels, extra = f.train, f.train_labels, {}
        cap = s.raw_pixels_max_train
        if f.raw_pixels and cap is not None and cap < len(labels):
            keep = stratified_subset(labels, cap, seed)
            train, labels, extra = train[keep], labels[keep], {"linear_train_subset": int(keep.numel())}
            if log is not None:
                log(f"  linear probe on raw pixels: fitted on a class-balanced {keep.numel()} of {len(f.train_labels)} "
                    "training images (eval.linear.raw_pixels_max_train; null fits on all)")
        probe = linear_probe(train, labels, f.test, f.test_labels, val_fraction=s.val_fraction, seed=seed)
        return {"linear_top1": probe["top1"], "linear_weight_decay": probe["weight_decay"], **extra}

    def record(self, s: LinearSettings, seed: int) -> str:
        # A sentence, as results.json has always held it (so runs evaluated before stay comparable).
        sentence = (f"logistic regression on frozen standardized features, L2 chosen on a {100 * s.val_fraction:g}% "
                    "validation split of the training labels")
        if s.raw_pixels_max_train is not None:
            sentence += (f"; the raw-pixel row fits on a class-balanced subset of at most {s.raw_pixels_max_train} "
                         "training images")
        return sentence
