"""Few-shot and low-label evaluation on frozen features.

Few-shot (docs/ARCHITECTURE.md, "Evaluation protocol"): ``k`` labelled training examples per class, ``k`` in 1, 5, 10,
drawn with each of 5 fixed seeds; the test top-1 is reported as mean and standard deviation over the seeds.
The seeds are fixed (not the run's seed) so that every run of a comparison is scored on the very same
labelled examples. The default classifier is SimpleShot's nearest centroid (Wang et al., "SimpleShot:
Revisiting Nearest-Neighbor Classification for Few-Shot Learning", 2019): features are centred on the
mean of the *whole* (unlabelled) training set, L2-normalised ("CL2N"), and a test sample takes the class
of the closest class centroid in Euclidean distance. It has no hyper-parameter to tune, which matters
because with one example per class there is nothing to carve a validation split from. A logistic
regression with a fixed weight decay is available as ``classifier="logistic"``.

Low-label: the 1% and 10% label fractions of SimCLR / SimCLRv2 (Chen et al., "A Simple Framework for
Contrastive Learning of Visual Representations", 2020; "Big Self-Supervised Models are Strong
Semi-Supervised Learners", 2020), class-balanced: every class keeps ``round(fraction * its size)`` (at
least one) of its training samples. SimCLRv2 fine-tunes on these subsets; here a linear probe is trained
on the frozen features of the subset (:func:`selfsup.eval.linear.linear_probe`, weight decay chosen on a
validation split carved from the *subset*, so no more labels are used than the fraction allows).

Subsets: for each class (in increasing label order) one permutation of its samples is drawn from a
generator seeded with ``seed`` and the first ``n`` are taken. The subset is therefore a pure function of
(labels, seed, n): identical across runs and machines, and nested (the 1-shot examples are among the
5-shot ones for the same seed).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.eval.linear import linear_probe

__all__ = ["class_balanced_subset", "fewshot_split", "lowlabel_subset", "nearest_centroid_predict",
           "fewshot_accuracy", "lowlabel_accuracy", "DEFAULT_SHOTS", "DEFAULT_FEWSHOT_SEEDS",
           "DEFAULT_LABEL_FRACTIONS", "FEWSHOT_LOGISTIC_WEIGHT_DECAY"]

DEFAULT_SHOTS: tuple[int, ...] = (1, 5, 10)
DEFAULT_FEWSHOT_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
DEFAULT_LABEL_FRACTIONS: tuple[float, ...] = (0.01, 0.1)
#: with a handful of labels there is no validation split to choose the regularisation on, so the logistic
#: few-shot classifier uses one fixed, moderate value (on standardised features).
FEWSHOT_LOGISTIC_WEIGHT_DECAY = 1e-2


def _labels(labels) -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    labels = labels.reshape(-1)
    if labels.is_floating_point():
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    return labels.long().cpu()


def class_balanced_subset(labels, count_for_class: Callable[[int], int], seed: int) -> torch.Tensor:
    """Sorted indices of a subset with ``count_for_class(class_size)`` samples of every class.

    Raises ValueError naming the class when it has fewer samples than asked for.
    """
    labels = _labels(labels)
    gen = torch.Generator().manual_seed(int(seed))
    chosen = []
    for c in torch.unique(labels).tolist():  # sorted: the draw order, hence the subset, is fixed
        members = (labels == c).nonzero().squeeze(1)
        n = int(count_for_class(members.numel()))
        if n > members.numel():
            raise ValueError(f"class {c} has {members.numel()} training samples, fewer than the {n} asked for")
        # The permutation does not depend on n, so subsets drawn with the same seed are nested.
        chosen.append(members[torch.randperm(members.numel(), generator=gen)[:n]])
    if not chosen:
        return torch.empty(0, dtype=torch.long)
    return torch.cat(chosen).sort().values


def fewshot_split(labels, shots: int, seed: int) -> torch.Tensor:
    """Indices of exactly ``shots`` samples of every class (sorted), drawn with ``seed``."""
    if isinstance(shots, bool) or int(shots) != shots or shots < 1:
        raise ValueError(f"shots must be a positive integer, got {shots!r}")
    return class_balanced_subset(labels, lambda size: int(shots), seed)


def lowlabel_subset(labels, fraction: float, seed: int = 0) -> torch.Tensor:
    """Indices of a class-balanced ``fraction`` of the samples: ``max(1, round(fraction * size))`` per class."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    return class_balanced_subset(labels, lambda size: max(1, int(round(fraction * size))), seed)


@torch.no_grad()
def nearest_centroid_predict(support, support_labels, queries, center) -> torch.Tensor:
    """SimpleShot CL2N nearest-centroid predictions (labels of ``support_labels``) for ``queries``."""
    def cl2n(x):
        return F.normalize(torch.as_tensor(x).float() - center, dim=1)

    support_labels = _labels(support_labels)
    classes = torch.unique(support_labels)
    s = cl2n(support)
    centroids = torch.stack([s[support_labels == c].mean(dim=0) for c in classes.tolist()])
    q = cl2n(queries)
    # ||q - c||^2 = ||q||^2 - 2 q.c + ||c||^2; ||q|| = 1 for every query, so it does not change the argmin.
    distances = centroids.pow(2).sum(dim=1)[None, :] - 2 * q @ centroids.T
    return classes[distances.argmin(dim=1)]


def _check(train, train_labels, test, test_labels):
    train, test = torch.as_tensor(train).float(), torch.as_tensor(test).float()
    train_labels, test_labels = _labels(train_labels), _labels(test_labels)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise ValueError(f"features must be 2-D with the same width; got {tuple(train.shape)}, {tuple(test.shape)}")
    if train_labels.numel() != train.shape[0] or test_labels.numel() != test.shape[0]:
        raise ValueError("number of labels and number of feature rows differ")
    if test.shape[0] == 0:
        raise ValueError("the test set is empty")
    return train, train_labels, test, test_labels


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def fewshot_accuracy(train, train_labels, test, test_labels, *, shots: Iterable[int] = DEFAULT_SHOTS,
                     seeds: Iterable[int] = DEFAULT_FEWSHOT_SEEDS, classifier: str = "centroid") -> dict:
    """Few-shot test top-1 for every number of ``shots``: ``{shots: {"mean", "std", "per_seed"}}``.

    ``std`` is the sample standard deviation over the seeds (0 with a single seed). The nearest-centroid
    features are centred on the mean of *all* training features: those images are the unlabelled data,
    so using them costs no labels.
    """
    if classifier not in ("centroid", "logistic"):
        raise ValueError(f"classifier must be 'centroid' or 'logistic', got {classifier!r}")
    train, train_labels, test, test_labels = _check(train, train_labels, test, test_labels)
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    center = train.mean(dim=0)
    out = {}
    for k in shots:
        per_seed = []
        for seed in seeds:
            idx = fewshot_split(train_labels, k, seed)
            if classifier == "centroid":
                pred = nearest_centroid_predict(train[idx], train_labels[idx], test, center)
                per_seed.append(float((pred == test_labels).double().mean()))
            else:
                probe = linear_probe(train[idx], train_labels[idx], test, test_labels, val_fraction=0.0,
                                     weight_decays=(FEWSHOT_LOGISTIC_WEIGHT_DECAY,))
                per_seed.append(probe["top1"])
        mean, std = _mean_std(per_seed)
        out[int(k)] = {"mean": mean, "std": std, "per_seed": per_seed}
    return out


def lowlabel_accuracy(train, train_labels, test, test_labels, *,
                      fractions: Iterable[float] = DEFAULT_LABEL_FRACTIONS, seed: int = 0) -> dict:
    """Linear-probe test top-1 using a class-balanced ``fraction`` of the training labels, for each fraction.

    Returns ``{fraction: {"top1", "labels", "weight_decay"}}`` (``labels``: the size of the subset). When no
    class of the subset has two samples there is no validation split, and the probe uses the few-shot
    fixed weight decay instead of choosing one.
    """
    train, train_labels, test, test_labels = _check(train, train_labels, test, test_labels)
    out = {}
    for fraction in fractions:
        idx = lowlabel_subset(train_labels, fraction, seed)
        sub_y = train_labels[idx]
        can_validate = bool((torch.bincount(sub_y) >= 2).any())
        probe = linear_probe(train[idx], sub_y, test, test_labels, seed=seed,
                             **({} if can_validate else {"val_fraction": 0.0,
                                                         "weight_decays": (FEWSHOT_LOGISTIC_WEIGHT_DECAY,)}))
        out[float(fraction)] = {"top1": probe["top1"], "labels": int(idx.numel()),
                                "weight_decay": probe["weight_decay"]}
    return out


def fraction_name(fraction: float) -> str:
    """0.01 -> '1pct', 0.1 -> '10pct', 0.005 -> '0.5pct' (metric names in results.json)."""
    pct = 100 * float(fraction)
    return f"{pct:.6g}pct" if not math.isclose(pct, round(pct)) else f"{int(round(pct))}pct"
