"""Scores of the baseline rows (random-init, raw pixels), kept between runs on the same data.

Every evaluation scores its backbone beside the same architecture at random init and beside the raw pixels. Both
are functions of the data, the transform, the protocol settings and (random init) the architecture and seed
alone, not of the run: on CIFAR-10 they were 115 of the 150 s that the default evaluation of a 10-minute run
took (benchmarks/RESULTS.md). So their scores are stored under ``<runs_dir>/.baselines/<key>.json`` and a later
evaluation of another run on the same data reads them instead of recomputing them. The key is a SHA-256 of
everything that changes a number: the row, the weights of the random-init model (and of its towers), the
fingerprints of both splits, the image size and normalisation, every protocol setting and the seed, the device
type and selfsup's version. A hit gives exactly the scores a recomputation would give on this machine;
``eval.cache_baselines=false`` recomputes them (and overwrites the stored scores).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from selfsup import __version__
from selfsup.eval.features import feature_cache_key
from selfsup.files import write_json_atomic

__all__ = ["BASELINE_CACHE_DIR", "baseline_key", "load_baseline", "save_baseline"]

#: Where a runs directory keeps baseline scores (beside the runs, so `rm -r runs` clears it too).
BASELINE_CACHE_DIR = ".baselines"
_FORMAT = 1


def baseline_key(row: str, model: torch.nn.Module | None, towers: torch.nn.Module | None, splits, preprocess,
                 settings_record: dict, device: str, precision: str = "fp32") -> str:
    """The SHA-256 hex digest of everything the scores of baseline ``row`` depend on (``model`` None: raw pixels);
    ``precision``: the feature extraction's ("fp32" keys are those of the caches written before it was a choice)."""
    transform = preprocess.to_json()
    header = {
        "format": _FORMAT,
        "selfsup": __version__,
        "row": row,
        "train": str(splits.train.fingerprint()),
        "test": str(splits.test.fingerprint()),
        "transform": transform,
        "settings": settings_record,
        "device": torch.device(device).type,
    }
    if precision != "fp32" and model is not None:  # raw pixels involve no model arithmetic
        header["precision"] = precision
    if model is not None:  # the weights (hashed with the train split and transform, as the feature cache does)
        header["model"] = feature_cache_key(model, splits.train, **transform)
    if towers is not None:
        header["towers"] = feature_cache_key(towers, splits.train, **transform)
    return hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode()).hexdigest()


def load_baseline(cache_dir: Path, key: str) -> dict | None:
    """The stored scores under ``key``, or None (absent, or unreadable: then the row is recomputed)."""
    path = Path(cache_dir) / f"{key}.json"
    try:
        blob = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if blob.get("format") != _FORMAT or not isinstance(blob.get("scores"), dict):
        return None
    return blob["scores"]


def save_baseline(cache_dir: Path, key: str, row: str, scores: dict) -> Path:
    path = Path(cache_dir) / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, {"format": _FORMAT, "row": row, "scores": scores})
