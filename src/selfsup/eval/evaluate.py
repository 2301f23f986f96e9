"""Evaluate a backbone end to end and write ``results.json``: a run's own backbone, or any backbone.

``selfsup eval RUN`` and the evaluation at the end of ``selfsup train`` go through :func:`evaluate_and_record`
with the run's config; ``selfsup eval --backbone NAME_OR_FILE [--weights FILE] --data DATA`` goes through
:func:`evaluate_any_backbone`, which first builds the backbone with :func:`load_any_backbone`:

- a saved selfsup backbone (a run directory, its ``backbone.safetensors`` / ``backbone.json``, or a file
  written by ``selfsup export``) carries its architecture, input size and normalisation, so it is evaluated
  exactly as the run that produced it evaluated it (same numbers, given the same data and eval settings);
- a registry name or ``timm:<model>`` builds that architecture; ``--weights`` (safetensors, or a
  ``torch.save`` state dict) is loaded into it, otherwise it stays randomly initialised and is reported as
  the random-init row. The input size and normalisation then come from timm's pretrained config of the
  model when it has one (ImageNet statistics), else from the data.

``results.json`` (the single source for tables) holds ``protocol`` (every setting that changes a number,
plus the image size), ``data`` (source, sizes, fingerprints of both splits), ``run`` (what was evaluated),
``eval_time_s`` and ``results`` (row -> metric -> value).
"""
from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch

from selfsup.backbones import build_backbone
from selfsup.backbones.weights import load_weights_into
from selfsup.config import Config
from selfsup.engine.precision import resolve_precision
from selfsup.eval.baseline_cache import BASELINE_CACHE_DIR
from selfsup.eval.display import format_table
from selfsup.eval.protocol import ProtocolSettings, evaluate_backbone
from selfsup.eval.protocols.dense import with_dense_when_masked
from selfsup.export import load_backbone
from selfsup.backbones.open_clip_towers import OPEN_CLIP_PREFIX
from selfsup.export.open_clip import load_open_clip_towers
from selfsup.export.towers_io import has_towers, load_towers
from selfsup.runs import (RESULTS_FILE, START_BACKBONE_DIR, SUMMARY_FILE, load_run_config, log, open_run_data,
                          run_preprocess)
from selfsup.views.kinds import kind_of
from selfsup.views.preprocess import Preprocess


def evaluate_and_record(backbone, splits, out_dir, *, settings: ProtocolSettings, preprocess: Preprocess,
                        data_name: str, run_info: dict, baselines: bool = True, batch_size: int = 256,
                        row: str = "pretrained", log: Callable[[str], None] = log, towers=None,
                        extra_rows: dict | None = None, baseline_cache: Path | None = None,
                        precision: str = "fp32") -> dict:
    """Run the protocol on ``backbone`` (features cached in ``out_dir/features``), write and print the results.

    ``baseline_cache``: a folder where the baseline rows' scores are reused from and stored
    (:mod:`selfsup.eval.baseline_cache`; ``<runs_dir>/.baselines``), or None to compute them.

    ``towers``: the image-text model around ``backbone`` (zero-shot, image-text retrieval); without it those
    protocols are dropped from what runs and from the record.

    ``precision`` ("auto", "fp32", "bf16"): feature extraction's, resolved as training resolves it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(precision, torch.device(device))
    if towers is None:
        skipped = [p.name for p in settings.selected("image_text")]
        if skipped:
            log(f"no text tower here: skipping {', '.join(skipped)} (they evaluate image-text models)")
        settings = settings.without("image_text")
    elif not settings.selected("image_text"):  # what an image-text model is judged by, unless already asked for
        settings = settings.with_image_text()
        log(f"an image-text model: evaluating {', '.join(p.name for p in settings.selected('image_text'))} too")
    settings = with_dense_when_masked(settings, splits, log)  # segmentation data: the dense probe too
    results = evaluate_backbone(backbone, splits, preprocess=preprocess, settings=settings, baselines=baselines,
                                batch_size=batch_size, device=device, cache_dir=out_dir / "features", log=log, row=row,
                                towers=towers, extra_rows=extra_rows, baseline_cache=baseline_cache,
                                autocast_dtype=torch.bfloat16 if precision == "bf16" else None)
    payload = {
        "protocol": {**settings.record(), "image_size": preprocess.image_size, "precision": precision},
        "data": {"source": str(data_name), "kind": kind_of(splits.train), "train_images": len(splits.train), "test_images": len(splits.test),
                 "num_classes": len(splits.train.classes) if splits.train.classes else None,
                 "train_fingerprint": splits.train.fingerprint(), "test_fingerprint": splits.test.fingerprint()},
        "run": run_info,
        "eval_time_s": round(time.perf_counter() - start, 2),
        "evaluated": datetime.now().isoformat(timespec="seconds"),
        "results": results,
    }
    (out_dir / RESULTS_FILE).write_text(json.dumps(payload, indent=2))
    print(f"\nResults on the held-out split of '{data_name}' ({len(splits.test)} images), "
          f"{out_dir / RESULTS_FILE}:\n")
    print(format_table(results, kind_of(splits.train)), flush=True)
    return payload


def eval_precision(cfg: Config) -> str:
    """``eval.precision``, with "train" read as the run's ``train.precision`` (unresolved: auto stays auto)."""
    return cfg.train.precision if cfg.eval.precision == "train" else cfg.eval.precision


def evaluate_run(run_dir: str | Path, data: str | None = None, splits=None, cfg: Config | None = None) -> dict:
    """Evaluate a run's exported backbone (and the baselines) and write ``results.json``.

    ``cfg`` (default: the run's config.yaml) gives the eval settings, e.g. with ``eval.*`` overrides applied."""
    run_dir = Path(run_dir)
    cfg = cfg or load_run_config(run_dir)
    backbone = load_backbone(run_dir)
    towers = load_towers(run_dir) if has_towers(run_dir) else None
    meta = backbone.meta
    if splits is None:
        splits = open_run_data(cfg, data, channels=meta["spec"]["in_channels"])
    summary_path = run_dir / SUMMARY_FILE
    run_info = {"method": cfg.method, "backbone": cfg.backbone.name, "seed": cfg.seed,
                **(json.loads(summary_path.read_text()) if summary_path.exists() else {})}
    preprocess = Preprocess(meta["image_size"], meta["normalization"]["mean"], meta["normalization"]["std"])
    start = run_dir / START_BACKBONE_DIR  # a run from backbone.weights: its backbone at step 0
    extra_rows = {"start": load_backbone(start)} if (start / "backbone.safetensors").is_file() else None
    payload = evaluate_and_record(
        backbone, splits, run_dir, settings=ProtocolSettings.from_eval_config(cfg.eval, cfg.seed),
        preprocess=preprocess, data_name=data or cfg.data.source, run_info=run_info, baselines=cfg.eval.baselines,
        batch_size=cfg.eval.batch_size, towers=towers, extra_rows=extra_rows,
        baseline_cache=run_dir.parent / BASELINE_CACHE_DIR if cfg.eval.cache_baselines else None,
        precision=eval_precision(cfg))
    scores = payload["results"]
    if extra_rows and "knn_top1@20" in scores.get("start", {}):
        before, after = scores["start"]["knn_top1@20"], scores["pretrained"]["knn_top1@20"]
        log(f"kNN@20 at step 0 (backbone.weights) {100 * before:.1f}, at the end {100 * after:.1f} "
            f"({100 * (after - before):+.1f})")
    return payload


# ------------------------------------------------------------------------------------------- any backbone
def _is_saved_backbone(path: Path) -> bool:
    return path.is_dir() or path.suffix in (".safetensors", ".json")


def load_any_backbone(backbone: str, weights: str | Path | None = None, channels: int = 3, seed: int = 0,
                      log: Callable[[str], None] = log):
    """``(module, meta, trained)``: a saved selfsup backbone (path) or a named architecture (+ weights).

    A named architecture without weights is initialised from ``seed`` (as the random-init baseline is), so
    its numbers are reproducible."""
    path = Path(backbone)
    if _is_saved_backbone(path) and path.exists():
        if weights is not None:
            raise ValueError(f"--weights is for a backbone given by name; {backbone} already holds its weights")
        model = load_backbone(path)
        return model, dict(model.meta), True
    if not backbone.startswith(("timm:", OPEN_CLIP_PREFIX)) and (path.suffix in (".safetensors", ".json")
                                                                 or "/" in backbone):
        raise FileNotFoundError(f"backbone {backbone} not found: give an existing run directory / backbone file, "
                                "a registered backbone name (selfsup list) or timm:<model name>")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_backbone(backbone, channels)
    if weights is not None:
        load_weights_into(model, weights, log)
    model.eval()
    return model, named_backbone_meta(model, channels), weights is not None


def named_backbone_meta(model: torch.nn.Module, channels: int) -> dict:
    """The spec and, where the architecture brings them (timm's pretrained config, an open_clip tower's
    preprocess config in the same place), its input size and normalisation."""
    meta = {"spec": model.spec}
    cfg = getattr(getattr(model, "model", None), "pretrained_cfg", None) or {}
    if cfg.get("input_size"):
        meta["image_size"] = int(cfg["input_size"][-1])
        if len(cfg.get("mean", ())) == channels:
            meta["normalization"] = {"mean": list(cfg["mean"]), "std": list(cfg["std"])}
    return meta


def load_any_towers(backbone: str, weights=None, channels: int = 3, seed: int = 0, log=log):
    """``(towers or None, image tower, meta, trained)``: both towers for ``open_clip:<arch>`` (zero-shot and
    image-text retrieval then run too), else :func:`load_any_backbone`'s backbone and no towers."""
    if not backbone.startswith(OPEN_CLIP_PREFIX):
        return (None, *load_any_backbone(backbone, weights, channels, seed, log))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        towers = load_open_clip_towers(backbone[len(OPEN_CLIP_PREFIX):], weights)
    return towers, towers.image, named_backbone_meta(towers.image, channels), weights is not None


def evaluate_any_backbone(backbone: str, data: str, *, weights=None, out_dir=None, cfg=None, image_size=None,
                          log: Callable[[str], None] = log) -> dict:
    """Evaluate any backbone on ``data`` with the protocol of ``cfg.eval`` (default config when None).

    ``cfg`` also gives the data options (channels for a named backbone, holdout fraction, seed) and, when
    set, ``data.mean`` / ``data.std``. Results go to ``out_dir`` (default ``<runs_dir>/eval-<name>-<time>``).
    """
    cfg = cfg or Config()
    towers, model, meta, trained = load_any_towers(backbone, weights, cfg.data.channels or 3, cfg.seed, log)
    channels = int(meta["spec"].get("in_channels", cfg.data.channels or 3))
    splits = open_run_data(cfg, data, channels=channels)
    size = int(image_size or meta.get("image_size") or cfg.data.image_size)
    if "normalization" in meta and (cfg.data.mean is None or cfg.data.std is None):  # the config's own wins
        preprocess = Preprocess(size, meta["normalization"]["mean"], meta["normalization"]["std"])
    else:
        preprocess = dataclasses.replace(run_preprocess(cfg, splits.train), image_size=size)
    name = meta["spec"]["name"]
    if out_dir is None:
        out_dir = Path(cfg.runs_dir) / f"eval-{name.replace(':', '-')}-{datetime.now():%Y%m%d-%H%M%S}"
    run_info = {"method": meta.get("method"), "backbone": name, "seed": cfg.seed,
                "evaluated_backbone": str(backbone), "weights": str(weights) if weights else None,
                "trained": trained, "mean": list(preprocess.mean), "std": list(preprocess.std)}
    settings = ProtocolSettings.from_eval_config(cfg.eval, cfg.seed)
    log(f"evaluating {name} ({'trained weights' if trained else 'random init'}) on {data} at {size}x{size}, "
        f"protocols {', '.join(settings.protocols)}; results in {out_dir}")
    cache = Path(cfg.runs_dir) / BASELINE_CACHE_DIR if cfg.eval.cache_baselines else None
    return evaluate_and_record(model, splits, out_dir, settings=settings, preprocess=preprocess, data_name=data,
                               run_info=run_info, baselines=cfg.eval.baselines, batch_size=cfg.eval.batch_size,
                               row="pretrained" if trained else "random_init", log=log, towers=towers,
                               baseline_cache=cache, precision=eval_precision(cfg))
