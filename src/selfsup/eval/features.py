"""Frozen-feature extraction for the evaluation protocols, with an on-disk cache.

The evaluation transform is the usual one: resize the shorter side to ``image_size`` (antialiased
bilinear), center-crop ``image_size`` x ``image_size``, scale to [0, 1], normalise with ``mean`` / ``std``.

A *source* is anything with ``len(source)``, ``source.get_image(i)`` (a uint8 (C, H, W) tensor; sizes may
differ between images), ``source.labels`` (an int64 array, or None) and ``source.fingerprint()`` (a string
that changes whenever the images or their order change).

Cache: with ``cache_dir``, features are stored as ``<cache_dir>/<key>.pt``, where ``key`` is the SHA-256
of the backbone's class name and state-dict tensors (names, dtypes, shapes and bytes), the source
fingerprint, the image size, mean, std and autocast dtype. A hit returns the stored features without
running the backbone; any change of weights, data or transform gives a new key.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from selfsup.backbones.base import pooled_features
from selfsup.files import atomic_path
from selfsup.views.kinds import pipeline_of
from selfsup.views.preprocess import eval_transform

__all__ = ["extract_features", "raw_pixel_features", "eval_transform", "feature_cache_key"]

_CACHE_FORMAT = "selfsup-features-v1"


class _EvalDataset(Dataset):
    """The source's images through the evaluation transform, in source order."""

    def __init__(self, source, image_size: int, mean, std):
        self.source, self.image_size = source, int(image_size)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.pipeline = pipeline_of(source)  # tables, point clouds, graphs: their own transform and collate

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> torch.Tensor:
        try:
            if self.pipeline is not None:
                return self.pipeline.eval_input(self.source.get_image(i))
            return eval_transform(self.source.get_image(i), self.image_size, self.mean, self.std)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"image {i} of {type(self.source).__name__}: {exc}") from exc


def _labels_of(source) -> torch.Tensor | None:
    labels = getattr(source, "labels", None)
    if labels is None:
        return None
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
    if labels.numel() != len(source):
        raise ValueError(f"source has {len(source)} images but {labels.numel()} labels")
    return labels


def _check_transform_args(image_size, mean, std):
    if int(image_size) < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if len(mean) != len(std) or len(mean) == 0:
        raise ValueError(f"mean and std must have the same non-zero length, got {list(mean)} and {list(std)}")
    if any(float(s) <= 0 for s in std):
        raise ValueError(f"std entries must be > 0, got {list(std)}")


def feature_cache_key(backbone: nn.Module, source, *, image_size: int, mean, std, autocast_dtype=None) -> str:
    """The SHA-256 hex digest under which :func:`extract_features` caches features."""
    h = hashlib.sha256()
    header = {
        "format": _CACHE_FORMAT,
        "backbone": f"{type(backbone).__module__}.{type(backbone).__qualname__}",
        "source": str(source.fingerprint()),
        "image_size": int(image_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "autocast_dtype": str(autocast_dtype) if autocast_dtype is not None else None,
        # the constructor options: some change the features and not the weights (global_pool: avg, token, flatten)
        "spec": getattr(backbone, "spec", None),
    }
    h.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name, value in backbone.state_dict().items():
        h.update(name.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            t = value.detach()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:  # extra state
            h.update(repr(value).encode())
    return h.hexdigest()


def _load_cache(path: Path, n: int):
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        features = blob["features"]
        if blob.get("format") != _CACHE_FORMAT or features.ndim != 2 or features.shape[0] != n:
            return None
        return features
    except Exception:  # unreadable or truncated file: treat as a miss and overwrite it
        return None


def _save_cache(path: Path, features: torch.Tensor, labels) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": _CACHE_FORMAT, "features": features, "labels": labels}, tmp)


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    source,
    *,
    image_size: int,
    mean,
    std,
    batch_size: int = 256,
    num_workers: int = 0,
    device="cpu",
    autocast_dtype=None,
    cache_dir=None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features of every image of ``source``, in source order.

    The backbone is run in eval mode on ``device`` (moved there if needed) and afterwards put back on its
    original device with every submodule's original train/eval mode. ``autocast_dtype`` (e.g.
    ``torch.bfloat16``) runs the forward pass under autocast; features are always returned as float32.

    Returns:
        ``(features, labels)``: a float32 CPU tensor (N, D) and an int64 tensor (N,) or None.
    """
    _check_transform_args(image_size, mean, std)
    n = len(source)
    labels = _labels_of(source)

    cache_path = None
    if cache_dir is not None:
        key = feature_cache_key(
            backbone, source, image_size=image_size, mean=mean, std=std, autocast_dtype=autocast_dtype
        )
        cache_path = Path(cache_dir) / f"{key}.pt"
        if cache_path.exists():
            cached = _load_cache(cache_path, n)
            if cached is not None:
                return cached, labels

    device = torch.device(device)
    modes = {m: m.training for m in backbone.modules()}
    params = list(backbone.parameters()) + list(backbone.buffers())
    home = params[0].device if params else device
    features = None
    try:
        backbone.eval()
        if home != device:
            backbone.to(device)
        dataset = _EvalDataset(source, image_size, mean, std)
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=False,
            num_workers=num_workers, pin_memory=device.type == "cuda", drop_last=False,
            collate_fn=dataset.pipeline.collate if dataset.pipeline is not None else None,
        )
        start = 0
        for images in loader:
            out = pooled_features(backbone, images.to(device, non_blocking=True), autocast_dtype)
            if features is None:
                features = torch.empty(n, out.shape[1], dtype=torch.float32)
            features[start:start + out.shape[0]] = out.float().cpu()
            start += out.shape[0]
    finally:
        if home != device:
            backbone.to(home)
        for m, training in modes.items():
            m.train(training)
    if features is None:  # empty source
        features = torch.empty(0, 0, dtype=torch.float32)
    if cache_path is not None:
        _save_cache(cache_path, features, labels)
    return features, labels


def raw_pixel_features(source, *, image_size: int, mean, std) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The raw-pixel baseline: every image through the evaluation transform, flattened to (N, C*S*S) (volumes:
    (N, C*S*S*S))."""
    _check_transform_args(image_size, mean, std)
    dataset = _EvalDataset(source, image_size, mean, std)
    n = len(dataset)
    features = None
    for i in range(n):
        row = dataset[i].reshape(-1) if dataset.pipeline is None else \
            dataset.pipeline.raw_features(dataset.source.get_image(i)).reshape(-1)
        if features is None:  # the width follows the field kind: images and volumes differ
            features = torch.empty(n, row.numel(), dtype=torch.float32)
        features[i] = row
    if features is None:
        features = torch.empty(0, len(mean) * int(image_size) ** 2, dtype=torch.float32)
    return features, _labels_of(source)
