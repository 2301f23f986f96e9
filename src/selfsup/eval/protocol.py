"""The evaluation protocol (docs/ARCHITECTURE.md): every selected protocol on one row at a time, always beside the
random-init and raw-pixel baselines so a user sees what pre-training bought.

The protocols themselves are registered objects, one file each in :mod:`selfsup.eval.protocols` (``knn`` and
``linear`` run by default; the others are opt-in because they cost more). *Feature protocols* are functions of
features extracted once per (row, split) and cached; *image protocols* (``linear_sgd``, ``finetune``) need the
backbone and the images, because their augmentation changes the features every epoch and fine-tuning changes
the backbone itself.

Results are a dict ``row -> metric -> value`` (rows: ``pretrained``, ``random_init``, ``raw_pixels``);
:meth:`ProtocolSettings.record` describes what ran for ``results.json`` so that runs evaluated differently
are never compared silently (see :mod:`selfsup.eval.compare`).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from selfsup.backbones import backbone_from_spec
from selfsup.eval.baseline_cache import baseline_key, load_baseline, save_baseline
from selfsup.eval.display import row_label
from selfsup.eval.features import extract_features, raw_pixel_features
from selfsup.backbones.towers import towers_from_spec
from selfsup.eval.protocols import (PROTOCOLS, FeatureSplits, ImageTask, ImageTextTask, Protocol, Settings,
                                    default_protocols)
from selfsup.views.kinds import kind_of
from selfsup.views.preprocess import Preprocess

__all__ = ["ProtocolSettings", "score_features", "score_images", "score_image_text", "evaluate_backbone",
           "random_init_like"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class ProtocolSettings:
    """Every choice that changes an evaluation number (besides the backbone, the data and the transform): the
    protocols that run, each registered protocol's settings (``options``: name -> its settings model, or a dict
    of its keys; defaults for the rest) and the run's seed (linear-probe validation split, random-init weights)."""

    protocols: tuple[str, ...] = field(default_factory=default_protocols)
    seed: int = 0
    options: Mapping[str, Settings | dict] = field(default_factory=dict)

    def __post_init__(self):
        for name in (*self.protocols, *self.options):
            PROTOCOLS.get(name)  # an unknown name: the registry's message, with a "did you mean"
        options = {}
        for name, protocol in PROTOCOLS.items():
            given = self.options.get(name, {})
            options[name] = given if isinstance(given, protocol.settings) else protocol.settings.model_validate(given)
        object.__setattr__(self, "protocols", tuple(self.protocols))
        object.__setattr__(self, "options", options)

    @classmethod
    def from_eval_config(cls, eval_cfg, seed: int) -> "ProtocolSettings":
        """From the ``eval`` section of a run config (its ``protocols`` and one section per protocol)."""
        options = {name: getattr(eval_cfg, name) for name in PROTOCOLS if getattr(eval_cfg, name, None) is not None}
        return cls(protocols=tuple(eval_cfg.protocols), seed=seed, options=options)

    def of(self, name: str) -> Settings:
        """The settings of protocol ``name``."""
        return self.options[name]

    def selected(self, inputs: str) -> list[Protocol]:
        """The selected protocols that take ``inputs`` ("features", "images" or "image_text"), in the order
        asked for."""
        return [PROTOCOLS[name] for name in self.protocols if PROTOCOLS[name].inputs == inputs]

    def without(self, inputs: str) -> "ProtocolSettings":
        """The same settings without the protocols that take ``inputs`` (e.g. the image-text protocols when the
        model has no text tower, so that the record says only what ran)."""
        kept = tuple(name for name in self.protocols if PROTOCOLS[name].inputs != inputs)
        return ProtocolSettings(protocols=kept, seed=self.seed, options=self.options)

    def with_image_text(self) -> "ProtocolSettings":
        """The same settings plus every registered image-text protocol (zero-shot, image-text retrieval)."""
        added = tuple(name for name, protocol in PROTOCOLS.items()
                      if protocol.inputs == "image_text" and name not in self.protocols)
        return ProtocolSettings(protocols=self.protocols + added, seed=self.seed, options=self.options)

    def fingerprint(self) -> dict:
        """Every setting of every protocol that runs (all keys, not only those ``record`` states) and the seed."""
        return {"protocols": {name: self.of(name).model_dump(mode="json") for name in self.protocols},
                "seed": self.seed}

    def record(self) -> dict:
        """What results.json stores under ``protocol``: one entry per protocol that ran, with its settings."""
        record = {name: PROTOCOLS[name].record(self.of(name), self.seed) for name in self.protocols}
        return {**record, "protocols": list(self.protocols), "seed": self.seed}


def _run(protocols: list[Protocol], data, settings: ProtocolSettings, raw_pixels: bool, log: Log | None) -> dict:
    scores = {}
    for protocol in protocols:
        if raw_pixels and not protocol.raw_pixels:  # e.g. fine-tuning: raw pixels have no layers to tune
            continue
        start = time.perf_counter()
        scores.update(protocol.run(data, settings.of(protocol.name), settings.seed, log))
        if log is not None:  # where evaluation time goes, protocol by protocol
            log(f"  {protocol.name}: {time.perf_counter() - start:.1f} s")
    return scores


def score_features(train, train_labels, test, test_labels, *, settings: ProtocolSettings | None = None,
                   raw_pixels: bool = False, log: Log | None = None) -> dict:
    """Every selected feature protocol on one row's cached features; ``{metric: value}``."""
    settings = settings or ProtocolSettings()
    features = FeatureSplits(train, torch.as_tensor(train_labels).long(), test, torch.as_tensor(test_labels).long(),
                             raw_pixels=raw_pixels)
    return _run(settings.selected("features"), features, settings, raw_pixels, log)


def score_images(task: ImageTask, *, settings: ProtocolSettings, log: Log | None = None) -> dict:
    """Every selected image protocol on one row (:class:`ImageTask`); ``{metric: value}``."""
    return _run(settings.selected("images"), task, settings, task.backbone is None, log)


def score_image_text(task: ImageTextTask, *, settings: ProtocolSettings, log: Log | None = None) -> dict:
    """Every selected image-text protocol on one row's towers (:class:`ImageTextTask`); ``{metric: value}``."""
    return _run(settings.selected("image_text"), task, settings, False, log)


def random_init_like(backbone: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The same architecture with fresh random weights (the random-init baseline)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return backbone_from_spec(copy.deepcopy(backbone.spec))


def random_init_towers_like(towers, image_tower: torch.nn.Module, seed: int = 0):
    """The same two towers with fresh random weights around ``image_tower`` (the random-init backbone, which
    is the same whatever method trained the row)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = towers_from_spec(copy.deepcopy(towers.spec))
    fresh.image = image_tower
    return fresh


def _features_of(model, source, preprocess: Preprocess, extract: dict):
    """(features, labels) of ``source``: the backbone's (cached), or the raw pixels for the raw-pixel row."""
    if model is None:
        return raw_pixel_features(source, **preprocess.to_json())
    return extract_features(model, source, **preprocess.to_json(), **extract)


def evaluate_backbone(backbone, splits, *, preprocess: Preprocess, settings: ProtocolSettings | None = None,
                      baselines: bool = True, batch_size: int = 256, device="cpu", cache_dir=None, log: Log = print,
                      row: str = "pretrained", towers=None, extra_rows: dict | None = None,
                      baseline_cache=None, autocast_dtype: torch.dtype | None = None) -> dict:
    """Scores of ``backbone`` (and the baselines) trained on ``splits.train`` labels, tested on ``splits.test``.

    ``row`` names the backbone's row; with ``row="random_init"`` (an untrained backbone) the random-init
    baseline is not added twice. Feature protocols score features extracted once per row (cached in
    ``cache_dir``); image protocols train on the images of every row on ``device`` (:class:`ImageTask`); a row
    gets only the metrics of the protocols that apply to it (no ``finetune`` on raw pixels). With ``towers``
    (an image-text model whose image tower is ``backbone``) the image-text protocols run on its row and on a
    random-init copy of it. ``extra_rows`` ({row: backbone}) are scored beside it, e.g. the backbone a run
    started from (``start``). With ``baseline_cache`` (a folder) the baseline rows' scores are read from it when
    an earlier evaluation stored them for the same data, transform, settings and weights
    (:mod:`selfsup.eval.baseline_cache`), and stored there otherwise. ``autocast_dtype`` (``torch.bfloat16``):
    features are extracted under autocast.
    """
    if splits.test is None or splits.train.labels is None:
        raise ValueError("evaluation needs labels: a labelled held-out split (class sub-folders, npz labels, or an "
                         "embedded dataset)")
    settings = settings or ProtocolSettings()
    extract = dict(batch_size=batch_size, device=device, cache_dir=cache_dir, autocast_dtype=autocast_dtype)
    candidates = {row: (backbone, towers), **{name: (model, None) for name, model in (extra_rows or {}).items()}}
    if baselines and row != "random_init":
        fresh = random_init_like(backbone, settings.seed)
        candidates["random_init"] = (fresh, None if towers is None else
                                     random_init_towers_like(towers, fresh, settings.seed))
    if baselines:
        candidates["raw_pixels"] = (None, None)
    needs_features = bool(settings.selected("features"))
    results = {}
    for name, (model, row_towers) in candidates.items():
        log(f"evaluating {row_label(name, kind_of(splits.train))}{' features' if model is not None else ''} ...")
        key = None
        if baseline_cache is not None and name in ("random_init", "raw_pixels"):
            key = baseline_key(name, model, row_towers, splits, preprocess, settings.fingerprint(), device,
                               precision="bf16" if autocast_dtype == torch.bfloat16 else "fp32")
            stored = load_baseline(baseline_cache, key)
            if stored is not None:
                log(f"  scores of an earlier evaluation on the same data and settings: {baseline_cache}/{key[:12]}... "
                    "(eval.cache_baselines=false recomputes them)")
                results[name] = stored
                continue
        scores = {}
        if needs_features:
            start = time.perf_counter()
            train, train_y = _features_of(model, splits.train, preprocess, extract)
            test, test_y = _features_of(model, splits.test, preprocess, extract)
            under = ", bf16 autocast" if model is not None and autocast_dtype == torch.bfloat16 else ""
            log(f"  features ({train.shape[0]} + {test.shape[0]} x {train.shape[1]}{under}): "
                f"{time.perf_counter() - start:.1f} s")
            scores.update(score_features(train, train_y, test, test_y, settings=settings, raw_pixels=model is None,
                                         log=log))
        scores.update(score_images(ImageTask(model, splits, preprocess, device), settings=settings, log=log))
        if row_towers is not None:
            task = ImageTextTask(row_towers, splits, preprocess, device, batch_size)
            scores.update(score_image_text(task, settings=settings, log=log))
        results[name] = scores
        if key is not None:
            save_baseline(baseline_cache, key, name, scores)
    return results
