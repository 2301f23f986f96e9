"""What the report reads from a run directory, loaded lazily and at most once.

Every piece (config, metrics log, results, backbone, data, features; an image-text run's two towers and its
held-out image embeddings) is loaded on first use by the section that needs it. A piece that cannot be had
raises :class:`NotAvailable` with the reason, and keeps raising the same reason for every later section, so
one missing file costs the sections that need it and nothing else.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from selfsup.data.splits import subset
from selfsup.eval.features import extract_features, feature_cache_key
from selfsup.eval.image_text import encode_images
from selfsup.export import load_backbone
from selfsup.export.towers_io import has_towers, load_towers
from selfsup.runs import CONFIG_FILE, RESULTS_FILE, load_run_config, open_run_data
from selfsup.views.preprocess import Preprocess

# The report's feature maps and the images it extracts features for stay this small whatever the data size:
# large enough to show structure, small enough to add seconds, not minutes, to the end of a run.
MAX_MAP_POINTS = 1000
MAX_EXTRACTED_IMAGES = 5000
# Held-out images the image-text sections embed (zero-shot, image-text retrieval): with their captions, a few
# seconds on a CPU for a small model; enough for a readable confusion matrix.
MAX_IMAGE_TEXT_IMAGES = 1000


class NotAvailable(Exception):
    """A report section (or a piece it needs) cannot be shown; the message says why."""


class HeldOutPairs(NamedTuple):
    """The held-out images the image-text sections use, embedded once by the run's image tower."""

    source: Any  # the test split, or an evenly spaced subset of it (labels and captions kept)
    indices: np.ndarray  # each image's index in the test split
    image_embeddings: torch.Tensor  # (N, D) L2-normalised


def query_positions(labels: np.ndarray | None, count: int, total: int) -> list[int]:
    """One query per class (the first of each) up to ``count``; without labels, evenly spaced ones."""
    if labels is None:
        return np.linspace(0, total - 1, min(count, total)).round().astype(int).tolist()
    first = {}
    for position, label in enumerate(labels.tolist()):
        first.setdefault(label, position)
    return [first[label] for label in sorted(first)][:count]


class RunContext:
    """Lazy access to one run directory's files, data, backbone and features."""

    def __init__(self, run_dir: str | Path, splits=None, device: str | None = None,
                 log: Callable[[str], None] = print):
        self.run_dir = Path(run_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.log = log
        self._memo: dict[str, Any] = {}
        if splits is not None:
            self._memo["splits"] = splits

    def _once(self, key: str, load: Callable[[], Any]) -> Any:
        """``load()`` the first time; afterwards its value, or the same NotAvailable it raised."""
        if key not in self._memo:
            try:
                self._memo[key] = load()
            except NotAvailable as reason:
                self._memo[key] = reason
            except Exception as error:  # unexpected: keep the type in the reason, it helps a bug report
                self._memo[key] = NotAvailable(f"{type(error).__name__}: {error}")
        value = self._memo[key]
        if isinstance(value, NotAvailable):
            raise value
        return value

    # -- files -------------------------------------------------------------------------------------------
    def _json(self, name: str) -> dict:
        path = self.run_dir / name
        if not path.exists():
            raise NotAvailable(f"{name} is not in the run directory")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise NotAvailable(f"{name} is not valid JSON ({error})") from None

    @property
    def config(self):
        def load():
            if not (self.run_dir / CONFIG_FILE).exists():
                raise NotAvailable(f"{CONFIG_FILE} is not in the run directory")
            return load_run_config(self.run_dir)
        return self._once("config", load)

    @property
    def results(self) -> dict:
        """The ``results.json`` payload (rows -> metrics under ``results``)."""
        def load():
            payload = self._json(RESULTS_FILE)
            if not payload.get("results"):
                raise NotAvailable("results.json holds no results")
            return payload
        return self._once("results", load)

    @property
    def train_summary(self) -> dict:
        return self._once("train_summary", lambda: self._json("train_summary.json"))

    @property
    def environment(self) -> dict:
        return self._once("environment", lambda: self._json("env.json"))

    @property
    def metrics(self) -> list[dict]:
        """``metrics.jsonl`` records sorted by step. A resumed run may log a step twice (the steps after its
        last checkpoint are replayed): the later record wins. Unreadable lines (a run killed mid-write) are
        skipped and counted in ``self.skipped_metric_lines``."""
        def load():
            path = self.run_dir / "metrics.jsonl"
            if not path.exists():
                raise NotAvailable("metrics.jsonl is not in the run directory")
            by_step: dict[Any, dict] = {}
            skipped = 0
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    skipped += 1
                    continue
                if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
                    by_step[record["step"]] = record
                else:
                    skipped += 1
            self.skipped_metric_lines = skipped
            if not by_step:
                raise NotAvailable("metrics.jsonl holds no logged steps (a run shorter than train.log_every steps "
                                   "logs none)")
            return [by_step[step] for step in sorted(by_step)]
        return self._once("metrics", load)

    def metric_series(self, key: str) -> list[tuple[float, float]]:
        """``[(step, value), ...]`` of one numeric metric, only where it was logged."""
        return [(float(r["step"]), float(r[key])) for r in self.metrics
                if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]

    def images_saved_by_run(self) -> list[Path]:
        """PNG files the run wrote (MAE's reconstructions.png, ...), in the run directory or one level below."""
        found = sorted(self.run_dir.glob("*.png")) + sorted(self.run_dir.glob("*/*.png"))
        return [p for p in found if p.parent.name not in ("features", "checkpoints")]

    # -- model and data ----------------------------------------------------------------------------------
    @property
    def backbone(self):
        """The run's exported backbone (eval mode, CPU), with ``.meta`` (image size, normalisation)."""
        def load():
            if not (self.run_dir / "backbone.safetensors").exists():
                raise NotAvailable("backbone.safetensors is not in the run directory (the run has not finished)")
            return load_backbone(self.run_dir)
        return self._once("backbone", load)

    @property
    def image_size(self) -> int:
        try:
            return int(self.backbone.meta["image_size"])
        except NotAvailable:
            return int(self.config.data.image_size)

    @property
    def normalization(self) -> tuple[list[float], list[float]]:
        try:
            norm = self.backbone.meta["normalization"]
            return list(norm["mean"]), list(norm["std"])
        except NotAvailable:
            data = self.config.data
            if data.mean is None or data.std is None:
                raise NotAvailable("neither backbone.json nor config.yaml records the normalisation") from None
            return list(data.mean), list(data.std)

    @property
    def preprocess(self) -> Preprocess:
        """How the run's backbone sees pixels: its image size and normalisation."""
        return Preprocess(self.image_size, *self.normalization)

    @property
    def towers(self):
        """An image-text run's two towers (eval mode, CPU), with ``.meta`` (image size, normalisation)."""
        def load():
            if not has_towers(self.run_dir):
                raise NotAvailable("no text tower: not an image-text run")
            return load_towers(self.run_dir)
        return self._once("towers", load)

    @property
    def towers_preprocess(self) -> Preprocess:
        """How the image tower sees pixels, as towers.json records it (its size and normalisation)."""
        meta = self.towers.meta
        norm = meta["normalization"]
        return Preprocess(int(meta["image_size"]), list(norm["mean"]), list(norm["std"]))

    @property
    def held_out_pairs(self) -> HeldOutPairs:
        """The test split's images (at most :data:`MAX_IMAGE_TEXT_IMAGES`, evenly spaced so every class keeps
        its share) and their image-tower embeddings."""
        def load():
            towers = self.towers  # first, so that an image-only run is told why, whatever its data
            test = self.splits.test
            if test is None or len(test) == 0:
                raise NotAvailable("the data has no held-out (test) split")
            indices = np.arange(len(test))
            source = test
            if len(test) > MAX_IMAGE_TEXT_IMAGES:
                indices = np.linspace(0, len(test) - 1, MAX_IMAGE_TEXT_IMAGES).round().astype(np.int64)
                source = subset(test, indices, "test-report-image-text")
            embeddings = encode_images(towers, source, self.towers_preprocess, batch_size=self.config.eval.batch_size,
                                       device=self.device)
            return HeldOutPairs(source, indices, embeddings)
        return self._once("held_out_pairs", load)

    @property
    def splits(self):
        def load():
            cfg = self.config
            try:
                return open_run_data(cfg)
            except Exception as error:
                raise NotAvailable(f"cannot open the run's data '{cfg.data.source}': {error}") from None
        return self._once("splits", load)

    @property
    def class_names(self) -> list[str] | None:
        classes = getattr(self.splits.train, "classes", None)
        return [str(c) for c in classes] if classes else None

    def query_split(self):
        """``(name, source)``: the labelled test split when there is one, else the training images."""
        splits = self.splits
        return ("test", splits.test) if splits.test is not None else ("train", splits.train)

    def features(self, split: str) -> tuple[torch.Tensor, np.ndarray | None, np.ndarray]:
        """``(features, labels or None, indices into the split)`` of the run's backbone on a split.

        The evaluation's feature cache (``RUN_DIR/features``) is used whenever it holds the whole split, so at
        the end of an evaluated run nothing is recomputed. Otherwise splits up to
        :data:`MAX_EXTRACTED_IMAGES` are extracted whole (and cached), larger ones as an evenly spaced subset."""
        def load():
            source = getattr(self.splits, split)
            if source is None or len(source) == 0:
                raise NotAvailable(f"the data has no {split} split")
            transform = self.preprocess.to_json()
            cache_dir = self.run_dir / "features"
            indices = np.arange(len(source))
            cached = (cache_dir / f"{feature_cache_key(self.backbone, source, **transform)}.pt").exists()
            if len(source) > MAX_EXTRACTED_IMAGES and not cached:
                indices = np.linspace(0, len(source) - 1, MAX_EXTRACTED_IMAGES).round().astype(np.int64)
                source = subset(source, indices, f"{split}-report-subset")
            features, labels = extract_features(self.backbone, source, batch_size=self.config.eval.batch_size,
                                                device=self.device, cache_dir=cache_dir, **transform)
            return features, (None if labels is None else labels.numpy()), indices
        return self._once(f"features/{split}", load)


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
