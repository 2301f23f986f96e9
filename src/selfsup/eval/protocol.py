"""The evaluation protocol (DESIGN.md): every feature protocol on one cached feature extraction per (backbone,
split), the image protocols on the images themselves, always beside the random-init and raw-pixel baselines so
a user sees what pre-training bought.

Protocols, by name (``kNN`` and ``linear`` run by default; the others are opt-in because they cost more):

===============  ========================================================  =====================================
name             what                                                      metrics in results.json
===============  ========================================================  =====================================
``knn``          weighted kNN, any list of k (a sweep), :mod:`.knn`        ``knn_top1@<k>``
``linear``       logistic regression, L2 chosen on a validation split      ``linear_top1``
``fewshot``      1/5/10 labels per class, 5 fixed seeds, :mod:`.fewshot`   ``fewshot_<k>shot_top1`` (+ ``_std``)
``lowlabel``     linear probe on 1% / 10% of the labels, :mod:`.fewshot`   ``lowlabel_<p>pct_top1``
``retrieval``    test queries against the train set, :mod:`.retrieval`    ``retrieval_recall@<k>``,
                                                                           ``retrieval_map@r``
``kmeans``       k-means, k = classes, test split, :mod:`.clustering`      ``kmeans_nmi``, ``kmeans_ari``
``diagnostics``  RankMe, per-dimension std, alignment, uniformity (test)   ``effective_rank``, ``normalized_std``,
                                                                           ``alignment``, ``uniformity``
``linear_sgd``   BN + linear by SGD on augmented images through the        ``linear_sgd_top1``
                 frozen backbone (also on raw pixels), :mod:`.linear_sgd`
``finetune``     every layer + a linear head, AdamW, layer-wise lr decay   ``finetune_top1``
                 for ViTs, mixup/CutMix; not on raw pixels, :mod:`.finetune`
===============  ========================================================  =====================================

The first seven are *feature protocols* (:data:`PROTOCOLS`): functions of cached features. ``linear_sgd`` and
``finetune`` are *image protocols* (:data:`IMAGE_PROTOCOLS`): they need the backbone and the images, because
their augmentation changes the features every epoch and fine-tuning changes the backbone itself.

Results are a dict ``row -> metric -> value`` (rows: ``pretrained``, ``random_init``, ``raw_pixels``);
:meth:`ProtocolSettings.record` describes the protocol for ``results.json`` so that runs evaluated
differently are never compared silently (see :mod:`selfsup.eval.compare`).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from selfsup.eval.clustering import kmeans_scores
from selfsup.eval.diagnostics import representation_diagnostics
from selfsup.eval.features import extract_features, raw_pixel_features
from selfsup.eval.fewshot import (DEFAULT_FEWSHOT_SEEDS, DEFAULT_LABEL_FRACTIONS, DEFAULT_SHOTS, fewshot_accuracy,
                                  fraction_name, lowlabel_accuracy)
from selfsup.eval.finetune import FinetuneSettings, finetune
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.linear import linear_probe
from selfsup.eval.linear_sgd import LinearSGDSettings, linear_sgd
from selfsup.eval.retrieval import DEFAULT_RECALL_AT, retrieval_metrics

ROWS = {"pretrained": "pretrained", "random_init": "random-init", "raw_pixels": "raw pixels"}
DEFAULT_PROTOCOLS: tuple[str, ...] = ("knn", "linear")


@dataclass(frozen=True)
class ProtocolSettings:
    """Every choice that changes an evaluation number (besides the backbone, the data and the transform)."""

    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS
    knn_k: tuple[int, ...] = (20, 200)
    knn_temperature: float = 0.07
    fewshot_shots: tuple[int, ...] = DEFAULT_SHOTS
    fewshot_seeds: tuple[int, ...] = DEFAULT_FEWSHOT_SEEDS
    lowlabel_fractions: tuple[float, ...] = DEFAULT_LABEL_FRACTIONS
    retrieval_recall_at: tuple[int, ...] = DEFAULT_RECALL_AT
    seed: int = 0  # the run's seed: linear-probe validation split, random-init weights
    # Fixed, like the few-shot seeds, so that every run of a comparison gets the same low-label subset,
    # k-means restarts and diagnostic samples: these numbers are then functions of the features alone.
    subset_seed: int = 0
    finetune: FinetuneSettings = FinetuneSettings()
    linear_sgd: LinearSGDSettings = LinearSGDSettings()

    def __post_init__(self):
        known = {**PROTOCOLS, **IMAGE_PROTOCOLS}
        unknown = [p for p in self.protocols if p not in known]
        if unknown:
            raise ValueError(f"unknown evaluation protocol(s) {unknown}; known: {', '.join(known)}")

    @classmethod
    def from_eval_config(cls, eval_cfg, seed: int) -> "ProtocolSettings":
        """From the ``eval`` section of a run config; ``eval.linear: false`` drops the linear probe."""
        protocols = tuple(getattr(eval_cfg, "protocols", DEFAULT_PROTOCOLS))
        if not eval_cfg.linear:
            protocols = tuple(p for p in protocols if p != "linear")
        return cls(protocols=protocols, knn_k=tuple(eval_cfg.knn_k), knn_temperature=eval_cfg.knn_temperature,
                   fewshot_shots=tuple(getattr(eval_cfg, "fewshot_shots", DEFAULT_SHOTS)),
                   fewshot_seeds=tuple(getattr(eval_cfg, "fewshot_seeds", DEFAULT_FEWSHOT_SEEDS)),
                   lowlabel_fractions=tuple(getattr(eval_cfg, "lowlabel_fractions", DEFAULT_LABEL_FRACTIONS)),
                   seed=seed, finetune=_prefixed_settings(eval_cfg, "finetune", FinetuneSettings),
                   linear_sgd=_prefixed_settings(eval_cfg, "linear_sgd", LinearSGDSettings))

    def record(self) -> dict:
        """What results.json stores under ``protocol``: one entry per protocol that ran, with its settings."""
        described = {
            "knn": {"k": list(self.knn_k), "temperature": self.knn_temperature, "similarity": "cosine"},
            "linear": "logistic regression on frozen standardized features, L2 chosen on a 10% validation split "
                      "of the training labels",
            "fewshot": {"shots": list(self.fewshot_shots), "seeds": list(self.fewshot_seeds),
                        "classifier": "nearest centroid (SimpleShot CL2N)"},
            "lowlabel": {"fractions": list(self.lowlabel_fractions), "seed": self.subset_seed,
                         "classifier": "linear probe on the class-balanced subset"},
            "retrieval": {"recall_at": list(self.retrieval_recall_at), "similarity": "cosine",
                          "queries": "test", "database": "train"},
            "kmeans": {"k": "number of classes", "split": "test", "seed": self.subset_seed},
            "diagnostics": {"split": "test", "alignment_positives": "same-class pairs", "seed": self.subset_seed},
            "linear_sgd": {**_as_json(self.linear_sgd), "optimizer": "SGD, cosine schedule",
                           "classifier": "BatchNorm (no affine) + linear on frozen features",
                           "augmentation": "random resized crop + horizontal flip", "seed": self.seed},
            "finetune": {**_as_json(self.finetune), "optimizer": "AdamW, linear warm-up + cosine",
                         "layer_decay_scope": "ViT backbones (others: one learning rate)",
                         "augmentation": "random resized crop + horizontal flip", "seed": self.seed},
        }
        record = {name: described[name] for name in self.protocols}
        # Kept for results.json files written before the protocol list existed (kNN/linear always present).
        record.setdefault("knn", None)
        record.setdefault("linear", None)
        record["protocols"] = list(self.protocols)
        record["seed"] = self.seed
        return record


def _as_json(settings) -> dict:
    """A settings dataclass as results.json stores it (tuples as lists, so a record equals its reloaded copy)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}


def _prefixed_settings(eval_cfg, prefix: str, settings_type):
    """``settings_type`` with every field ``x`` taken from ``eval_cfg.<prefix>_x`` when the config has that key
    (``eval.finetune_lr`` -> ``FinetuneSettings.lr``), the dataclass default otherwise."""
    values = {f.name: getattr(eval_cfg, f"{prefix}_{f.name}") for f in dataclasses.fields(settings_type)
              if hasattr(eval_cfg, f"{prefix}_{f.name}")}
    return settings_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True)
class FeatureSplits:
    """Cached features of one candidate (backbone or raw pixels): train = labelled bank, test = evaluation."""

    train: torch.Tensor
    train_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor


# ------------------------------------------------------------------------------------------------ protocols
# Each protocol: (features, settings) -> {metric: value}. Composition: a new protocol is one function here.

def _knn(f: FeatureSplits, s: ProtocolSettings) -> dict:
    accuracy = knn_accuracy(f.train, f.train_labels, f.test, f.test_labels, ks=s.knn_k, temperature=s.knn_temperature)
    return {f"knn_top1@{k}": acc for k, acc in accuracy.items()}


def _linear(f: FeatureSplits, s: ProtocolSettings) -> dict:
    probe = linear_probe(f.train, f.train_labels, f.test, f.test_labels, seed=s.seed)
    return {"linear_top1": probe["top1"], "linear_weight_decay": probe["weight_decay"]}


def _fewshot(f: FeatureSplits, s: ProtocolSettings) -> dict:
    smallest_class = int(torch.bincount(f.train_labels)[torch.unique(f.train_labels)].min())
    # A shot count larger than the smallest class cannot be drawn; skip it rather than fail the whole eval.
    shots = [k for k in s.fewshot_shots if k <= smallest_class]
    out = {}
    for k, score in fewshot_accuracy(f.train, f.train_labels, f.test, f.test_labels, shots=shots,
                                     seeds=s.fewshot_seeds).items():
        out[f"fewshot_{k}shot_top1"] = score["mean"]
        out[f"fewshot_{k}shot_top1_std"] = score["std"]
    return out


def _lowlabel(f: FeatureSplits, s: ProtocolSettings) -> dict:
    scores = lowlabel_accuracy(f.train, f.train_labels, f.test, f.test_labels, fractions=s.lowlabel_fractions,
                               seed=s.subset_seed)
    return {f"lowlabel_{fraction_name(p)}_top1": score["top1"] for p, score in scores.items()}


def _retrieval(f: FeatureSplits, s: ProtocolSettings) -> dict:
    scores = retrieval_metrics(f.train, f.train_labels, f.test, f.test_labels, recall_at=s.retrieval_recall_at)
    return {f"retrieval_{name}": value for name, value in scores.items()}


def _kmeans(f: FeatureSplits, s: ProtocolSettings) -> dict:
    scores = kmeans_scores(f.test, f.test_labels, seed=s.subset_seed)
    return {f"kmeans_{name}": value for name, value in scores.items()}


def _diagnostics(f: FeatureSplits, s: ProtocolSettings) -> dict:
    return representation_diagnostics(f.test, f.test_labels, seed=s.subset_seed)


PROTOCOLS: dict[str, Callable[[FeatureSplits, ProtocolSettings], dict]] = {
    "knn": _knn, "linear": _linear, "fewshot": _fewshot, "lowlabel": _lowlabel, "retrieval": _retrieval,
    "kmeans": _kmeans, "diagnostics": _diagnostics,
}


@dataclass(frozen=True)
class ImageTask:
    """What an image protocol trains and tests on: one row's backbone (None for the raw-pixel row) and the
    labelled images with the evaluation transform's size and normalisation."""

    backbone: torch.nn.Module | None
    splits: Any  # DataSplits: labelled train and test sources
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: Any = "cpu"


# Each image protocol: (task, settings) -> {metric: value}; {} where it does not apply to the row.

def _linear_sgd(t: ImageTask, s: ProtocolSettings, log=None) -> dict:
    return linear_sgd(t.backbone, t.splits, image_size=t.image_size, mean=t.mean, std=t.std, settings=s.linear_sgd,
                      seed=s.seed, device=t.device, log=log)


def _finetune(t: ImageTask, s: ProtocolSettings, log=None) -> dict:
    if t.backbone is None:  # raw pixels have no layers to tune: the raw-pixel row goes without this metric
        return {}
    return finetune(t.backbone, t.splits, image_size=t.image_size, mean=t.mean, std=t.std, settings=s.finetune,
                    seed=s.seed, device=t.device, log=log)


IMAGE_PROTOCOLS: dict[str, Callable[..., dict]] = {"linear_sgd": _linear_sgd, "finetune": _finetune}


def random_init_like(backbone: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The same architecture with fresh random weights (the random-init baseline)."""
    from selfsup.backbones import backbone_from_spec

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return backbone_from_spec(copy.deepcopy(backbone.spec))


def score_features(train, train_labels, test, test_labels, *, settings: ProtocolSettings | None = None,
                   log: Callable[[str], None] | None = None, **legacy) -> dict:
    """Every protocol of ``settings`` on one set of cached features; ``{metric: value}``.

    ``legacy`` keywords (``ks``, ``temperature``, ``linear``, ``seed``) build the settings when none are given.
    """
    if settings is None:
        settings = _settings_from_keywords(**legacy)
    features = FeatureSplits(train, torch.as_tensor(train_labels).long(), test, torch.as_tensor(test_labels).long())
    scores = {}
    for name in _selected(settings, PROTOCOLS):
        start = time.perf_counter()
        scores.update(PROTOCOLS[name](features, settings))
        if log is not None and name not in DEFAULT_PROTOCOLS:
            log(f"  {name}: {time.perf_counter() - start:.1f} s")
    return scores


def score_images(task: ImageTask, *, settings: ProtocolSettings, log: Callable[[str], None] | None = None) -> dict:
    """Every image protocol of ``settings`` on one row (:class:`ImageTask`); ``{metric: value}``."""
    scores = {}
    for name in _selected(settings, IMAGE_PROTOCOLS):
        start = time.perf_counter()
        scores.update(IMAGE_PROTOCOLS[name](task, settings, log))
        if log is not None:
            log(f"  {name}: {time.perf_counter() - start:.1f} s")
    return scores


def _selected(settings: ProtocolSettings, registry: dict) -> list[str]:
    return [name for name in settings.protocols if name in registry]


def _settings_from_keywords(ks=(20, 200), temperature: float = 0.07, linear: bool = True, seed: int = 0,
                            protocols=None) -> ProtocolSettings:
    protocols = tuple(protocols) if protocols is not None else DEFAULT_PROTOCOLS
    if not linear:
        protocols = tuple(p for p in protocols if p != "linear")
    return ProtocolSettings(protocols=protocols, knn_k=tuple(ks), knn_temperature=temperature, seed=seed)


def _features_of(model, source, kw: dict, extract: dict):
    """(features, labels) of ``source``: the backbone's (cached), or the raw pixels for the raw-pixel row."""
    return raw_pixel_features(source, **kw) if model is None else extract_features(model, source, **extract)


def evaluate_backbone(backbone, splits, *, image_size: int, mean, std, ks=(20, 200), temperature: float = 0.07,
                      linear: bool = True, baselines: bool = True, batch_size: int = 256, device="cpu",
                      cache_dir=None, seed: int = 0, log=print, protocols=None,
                      settings: ProtocolSettings | None = None, row: str = "pretrained") -> dict:
    """Scores of ``backbone`` (and the baselines) trained on ``splits.train`` labels, tested on ``splits.test``.

    ``settings`` (a :class:`ProtocolSettings`) wins over ``ks`` / ``temperature`` / ``linear`` / ``seed`` /
    ``protocols``, which remain for the callers that only need kNN and the linear probe. ``row`` names the
    backbone's row; with ``row="random_init"`` (an untrained backbone) the random-init baseline is not added
    twice. Feature protocols score features extracted once per row (cached in ``cache_dir``); image protocols
    train on the images of every row on ``device`` (:class:`ImageTask`); a row gets only the metrics of the
    protocols that apply to it (no ``finetune`` on raw pixels).
    """
    if splits.test is None or splits.train.labels is None:
        raise ValueError("evaluation needs labels: a labelled held-out split (class sub-folders, npz labels, or an "
                         "embedded dataset)")
    if settings is None:
        settings = _settings_from_keywords(ks=ks, temperature=temperature, linear=linear, seed=seed,
                                           protocols=protocols)
    kw = dict(image_size=image_size, mean=mean, std=std)
    extract = dict(batch_size=batch_size, device=device, cache_dir=cache_dir, **kw)
    candidates = {row: backbone}
    if baselines and row != "random_init":
        candidates["random_init"] = random_init_like(backbone, settings.seed)
    if baselines:
        candidates["raw_pixels"] = None
    needs_features = bool(_selected(settings, PROTOCOLS))
    results = {}
    for name, model in candidates.items():
        log(f"evaluating {ROWS.get(name, name)}{' features' if model is not None else ''} ...")
        scores = {}
        if needs_features:
            train, train_y = _features_of(model, splits.train, kw, extract)
            test, test_y = _features_of(model, splits.test, kw, extract)
            scores.update(score_features(train, train_y, test, test_y, settings=settings, log=log))
        task = ImageTask(model, splits, int(image_size), tuple(mean), tuple(std), device)
        scores.update(score_images(task, settings=settings, log=log))
        results[name] = scores
    return results


# ------------------------------------------------------------------------------------------------- display
# Display order of the metric families; metrics of unknown families come last, alphabetically.
_FAMILY_ORDER = ("knn_top1@", "linear_", "linear_sgd_", "finetune_", "fewshot_", "lowlabel_", "retrieval_recall@",
                 "retrieval_map", "kmeans_nmi", "kmeans_ari", "effective_rank", "normalized_std", "alignment",
                 "uniformity")
#: Keys of a results row that are chosen settings, not scores: kept in results.json, left out of tables.
#: (``finetune_layer_decay``: the decay actually applied, 1.0 for a backbone that is not a ViT.)
NOT_SCORES = frozenset({"linear_weight_decay", "finetune_layer_decay"})
#: Scores that are not fractions in [0, 1] (shown as plain numbers rather than percentages).
PLAIN_NUMBERS = frozenset({"effective_rank", "normalized_std", "alignment", "uniformity"})


def _number_in(name: str) -> float:
    digits = "".join(ch if ch.isdigit() or ch == "." else " " for ch in name).split()
    try:
        return float(digits[0]) if digits else 0.0
    except ValueError:
        return 0.0


def metric_sort_key(name: str):
    # The longest matching prefix: "linear_sgd_top1" belongs to "linear_sgd_", not to "linear_".
    matches = [(len(prefix), i, prefix) for i, prefix in enumerate(_FAMILY_ORDER) if name.startswith(prefix)]
    if matches:
        _, i, prefix = max(matches)
        return (i, _number_in(name[len(prefix):]), name)
    return (len(_FAMILY_ORDER), 0.0, name)


def table_metrics(rows) -> list[str]:
    """The metric columns to show for these result rows (dicts), in display order; ``*_std`` companions of a
    present metric are folded into its cell (see :func:`format_metric`)."""
    present = {m for r in rows for m in r}
    shown = [m for m in present if m not in NOT_SCORES and not (m.endswith("_std") and m[:-4] in present)]
    return sorted(shown, key=metric_sort_key)


def metric_label(name: str) -> str:
    """Short column title: ``knn_top1@20`` -> ``knn@20``, ``fewshot_5shot_top1`` -> ``fewshot_5shot``."""
    return name.replace("_top1", "")


def format_metric(name: str, value, std=None) -> str:
    """A cell: fractions as percentages with one decimal (``std`` as ``± s``), other scores with 3 decimals."""
    if value is None:
        return "-"
    if isinstance(value, float) and value != value:
        return "nan"
    if name in PLAIN_NUMBERS or not isinstance(value, (int, float)):
        return f"{value:.3f}" if isinstance(value, float) else str(value)
    cell = f"{100 * value:.1f}"
    return cell + (f" ± {100 * std:.1f}" if std is not None else "")


def format_table(results: dict) -> str:
    """A text table with one line per metric and one column per row of ``results`` (pretrained, baselines)."""
    metrics = table_metrics(results.values())
    names = list(results)
    width = max([len(metric_label(m)) for m in metrics] + [8]) + 2
    cols = [max(len(ROWS.get(n, n)), 14) + 2 for n in names]
    header = f"{'metric (%)':<{width}}" + "".join(f"{ROWS.get(n, n):>{w}}" for n, w in zip(names, cols))
    lines = [header, "-" * len(header)]
    for m in metrics:
        cells = "".join(
            f"{format_metric(m, results[n].get(m), results[n].get(m + '_std')):>{w}}" for n, w in zip(names, cols))
        label = metric_label(m) + (" (raw)" if m in PLAIN_NUMBERS else "")
        lines.append(f"{label:<{width}}{cells}")
    return "\n".join(lines)


__all__ = ["DEFAULT_PROTOCOLS", "PROTOCOLS", "IMAGE_PROTOCOLS", "ProtocolSettings", "FeatureSplits", "ImageTask",
           "ROWS", "evaluate_backbone", "score_features", "score_images", "random_init_like", "format_table",
           "format_metric", "metric_label", "table_metrics", "metric_sort_key", "NOT_SCORES", "PLAIN_NUMBERS"]
