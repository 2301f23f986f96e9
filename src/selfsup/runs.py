"""The run directory (docs/ARCHITECTURE.md, "Runs"): its file names, and loading what a run is made of.

``train``, ``eval``, the report, ``bench`` and the CLI import this module instead of importing each other:

- the file names of ``runs/<name>/`` (:data:`CONFIG_FILE`, :data:`RESULTS_FILE`, ...);
- :func:`load_run_config`: a run's resolved config, with a message when the folder is not a run;
- :func:`open_run_data`: the data of a config, as ``train`` opens it;
- :func:`run_preprocess`: the image size and normalisation (from the config, or measured on the data);
- :func:`build_run_method`: the seeded backbone and method of a config, checked against its data;
- :func:`environment` (what ``env.json`` records) and :func:`log` (the run's messages, on stderr).
"""
from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import timm
import torch
import torchvision

from selfsup import __version__

from selfsup.backbones import BACKBONES, build_backbone
from selfsup.backbones.weights import load_weights_into
from selfsup.config import Config, ConfigError, load_config
from selfsup.cpu import cpu_flags, cpu_model
from selfsup.data import DataSplits, channel_stats, open_data
from selfsup.data.volumes import volume_slices
from selfsup.methods import METHODS, Method, build_method
from selfsup.views.preprocess import Preprocess
from selfsup.data.pixels import check_channel_kind
from selfsup.fields import IMAGE, VOLUME
from selfsup.views.dataset import viewed_field
from selfsup.views.kinds import KIND_PIPELINES, adapt_views
from selfsup.views.spec import overhead_views, without_flips

CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "train_summary.json"
RESULTS_FILE = "results.json"
BAD_FILES = "bad_files.txt"
DATA_STATS_FILE = "data_stats.json"  # raw data: the pixel statistics the run used (window, normalisation)
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.pt"
# wsd / infinite schedules: the state where the final decay began, which an extension of the run continues from
DECAY_CHECKPOINT_FILE = "before_decay.pt"
# backbone.weights: the backbone as it started (step 0), evaluated beside the trained one ("features kept?")
START_BACKBONE_DIR = "start_backbone"


def log(message: str) -> None:
    print(f"[selfsup] {message}", file=sys.stderr, flush=True)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(dist_info, precision: str) -> dict:
    """What env.json records: versions, machine, devices, precision, git commit, command line."""
    return {
        "selfsup": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "timm": timm.__version__, "platform": platform.platform(),
        "processor": platform.processor(), "cpu_model": cpu_model(), "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "world_size": dist_info.world_size, "device": str(dist_info.device), "precision": precision,
        "git_commit": _git_commit(), "command": sys.argv, "started": datetime.now().isoformat(timespec="seconds"),
    }


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE


def decay_checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / DECAY_CHECKPOINT_FILE


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).exists()


def load_run_config(run_dir: str | Path) -> Config:
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    cfg = load_config(run_dir / CONFIG_FILE)
    if (run_dir / DATA_STATS_FILE).is_file():  # the run's own pixel window, wherever the run folder moved
        cfg.data.stats = str(run_dir / DATA_STATS_FILE)
    return cfg


def open_run_data(cfg: Config, data: str | None = None, channels: int | None = None) -> DataSplits:
    """The data of ``cfg`` (or ``data`` in its place), opened with the config's data options
    (``data.channel_kind`` other than auto replaces the data's own)."""
    splits = open_data(data or cfg.data.source, channels=channels or cfg.data.channels,
                       max_bad_fraction=cfg.data.max_bad_fraction, seed=cfg.seed,
                       holdout_fraction=cfg.data.holdout_fraction, pixels=cfg.data.pixels, stats=cfg.data.stats,
                       clip_percentiles=cfg.data.clip_percentiles, log=log, label_column=cfg.data.label_column,
                       image_size=cfg.data.image_size)
    if cfg.data.slices:
        try:
            splits = volume_slices(splits)
        except ValueError as error:
            raise ConfigError(f"config key 'data.slices': {error}") from None
    if cfg.data.channel_kind != "auto":
        for source in (splits.train, splits.test):
            if source is not None:
                try:
                    source.channel_kind = check_channel_kind(cfg.data.channel_kind, source.channels)
                except ValueError as error:
                    raise ConfigError(str(error)) from None
    return splits


def run_preprocess(cfg: Config, source) -> Preprocess:
    """``data.image_size`` with ``data.mean`` / ``data.std``, or the source's own statistics, or measured ones."""
    if cfg.data.mean is not None and cfg.data.std is not None:
        mean, std = cfg.data.mean, cfg.data.std
    elif hasattr(source, "mean") and hasattr(source, "std"):
        mean, std = source.mean, source.std
    else:
        mean, std = channel_stats(source)
    return Preprocess(cfg.data.image_size, mean, std)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _backbones_for(kind: str) -> list[str]:
    """Registered backbones of a field kind (3-D ones say ``field_kind = "volume"``; the rest encode images)."""
    names = [name for name in BACKBONES if getattr(BACKBONES.get(name), "field_kind", None) == kind]
    return names or ["any registered 2-D backbone"]


def _factory_kind(name: str) -> str:
    """The field kind a registered backbone encodes, read from its factory (images for timm / open_clip names)."""
    return getattr(BACKBONES.get(name), "field_kind", IMAGE.name) if name in BACKBONES else IMAGE.name


def build_run_method(cfg: Config, train_source) -> Method:
    """The seeded backbone and method of a run, checked against its data, as ``train`` and ``bench`` build them.

    ``data.hflip`` (None: the data's own ``flips_preserve_labels``, True when it does not say) turns horizontal
    flips off in every view of the method."""
    seed_everything(cfg.seed)
    data_kind = viewed_field(train_source)[1]
    method_kind = METHODS.get(cfg.method).field_kind
    if method_kind != IMAGE.name and method_kind != data_kind:
        hint = KIND_PIPELINES.get(method_kind).data_hint if method_kind in KIND_PIPELINES else f"{method_kind} data"
        raise ConfigError(f"config key 'method': {cfg.method} trains on {method_kind} data, but {train_source.name} "
                          f"holds {data_kind}s: give data.source {hint}")
    if method_kind == IMAGE.name and data_kind in KIND_PIPELINES and METHODS.get(cfg.method).needs_vit:
        raise ConfigError(f"config key 'method': {cfg.method} masks or predicts image patches, which {data_kind} data "
                          f"does not have: use a method written for {data_kind}s (tjepa, point_mae, graphmae) or a "
                          "joint-embedding method (simclr, vicreg, byol, ...)")
    # Encoders of tables / graphs take their input layout from the data (columns, node features); the spec keeps it.
    data_options = getattr(train_source, "encoder_options", {}) if _factory_kind(cfg.backbone.name) == data_kind else {}
    backbone = build_backbone(cfg.backbone.name, train_source.channels, **{**data_options, **cfg.backbone.options})
    if cfg.backbone.weights:
        try:
            load_weights_into(backbone, cfg.backbone.weights, log, cfg.backbone.carry, cfg.backbone.rgb_bands)
        except (ValueError, FileNotFoundError) as error:
            raise ConfigError(f"config key 'backbone.weights': {error}") from None
        log(f"backbone initialised from {cfg.backbone.weights}")
    if getattr(backbone, "field_kind", IMAGE.name) != data_kind:
        raise ConfigError(f"config key 'backbone.name': {cfg.backbone.name} encodes "
                          f"{getattr(backbone, 'field_kind', IMAGE.name)}s, but {train_source.name} holds "
                          f"{data_kind}s: use a {data_kind} backbone ({', '.join(_backbones_for(data_kind))})"
                          + (", or data.slices=true for a 2-D backbone" if data_kind == VOLUME.name else ""))
    method = build_method(cfg.method, backbone, cfg.method_options)
    try:  # image crops of a joint-embedding method become the kind's own views (tables, point clouds)
        method.views = adapt_views(method.views, data_kind)
    except ValueError as error:
        raise ConfigError(f"config key 'method': {error}") from None
    if method.needs_labels and train_source.labels is None:
        raise ConfigError(f"config key 'method': '{cfg.method}' is supervised and needs labels, but "
                          f"{cfg.data.source} has none: use class sub-folders or an npz with labels, or a "
                          "self-supervised method")
    flips = cfg.data.hflip if cfg.data.hflip is not None else getattr(train_source, "flips_preserve_labels", True)
    if not flips:
        method.views = without_flips(method.views)
    if cfg.data.overhead:
        method.views = overhead_views(method.views)
    return method
