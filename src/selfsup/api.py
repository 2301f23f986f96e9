"""The Python API, mirroring the CLI: ``selfsup.train``, ``selfsup.evaluate``, ``selfsup.bench``,
``selfsup.load_backbone``, ``selfsup.api.embed``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfsup import run, runs, throughput
from selfsup.config import Config, build_config
from selfsup.eval.evaluate import evaluate_run, load_any_backbone
from selfsup.export import load_backbone as _load_backbone
from selfsup.export.embeddings import DEFAULT_CHUNK_FILES, EmbedResult, embed_folder


def train(recipe: str | Path | None = None, overrides: list[str] | None = None, resume: str | Path | None = None,
          **sections: Any) -> Path:
    """Pretrain (and evaluate/export) a backbone; returns the run directory.

    ``selfsup.train("demo", ["train.budget=60s"])`` or ``selfsup.train(method="simclr", data={"source": "imgs/"},
    train={"epochs": 10})``. With ``resume=RUN_DIR`` the run continues from its last checkpoint (overrides apply).
    """
    if resume is not None:
        return run.train(None, resume=resume, resume_overrides=overrides)
    return run.train(build_config(recipe, overrides, **sections))


def evaluate(run_dir: str | Path, data: str | None = None) -> dict:
    """Evaluate a run's backbone with kNN and linear probe beside the baselines; writes results.json."""
    return evaluate_run(run_dir, data=data)


def bench(recipe: str | Path | None = None, overrides: list[str] | None = None, steps: int = 30, warmup: int = 5,
          json_path: str | Path | None = None, peaks: dict | None = None, **sections: Any) -> dict:
    """Measure a recipe's training pipeline (images/s, step-time split, peak memory, FLOPs, MFU); returns the
    result that ``selfsup bench`` prints, and writes it to ``json_path`` when given.

    ``selfsup.bench("demo", ["train.compile=true"], steps=20)``. ``peaks`` reuses an earlier result's matmul
    peaks (its ``peak_flops_per_s`` and ``peak_matmul_size``) instead of measuring them again.
    """
    result = throughput.bench(build_config(recipe, overrides, **sections), steps=steps, warmup=warmup, peaks=peaks,
                              command=throughput.command_line(recipe, overrides, steps, warmup))
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def load_backbone(path: str | Path, device: str = "cpu"):
    """A run's (or a backbone.safetensors file's) backbone, ready for feature extraction."""
    return _load_backbone(path, device=device)


def embed(backbone: str | Path, data: str | Path, out: str | Path, *, weights: str | Path | None = None,
          image_size: int | None = None, batch_size: int = 256, num_workers: int = 2, device: str = "auto",
          precision: str = "fp32", pixels: str | None = None, stats: str | Path | None = None,
          chunk_files: int = DEFAULT_CHUNK_FILES, restart: bool = False, progress: bool = True,
          on_chunk=None) -> EmbedResult:
    """``selfsup embed``: the embeddings of every image file under ``data`` in ``out`` (``.npy`` + ``.paths.txt``,
    ``.parquet``, ``.csv``; :mod:`selfsup.export.embeddings`), resumable; returns what was written.

    ``backbone``: a run directory (its backbone at its image size and normalisation, its pixel mode, and for raw
    data the pixel window of its ``data_stats.json``), a saved backbone (folder or ``.safetensors``), or a backbone
    name (``selfsup list``, ``timm:<model>``) with ``weights`` (random init without). The run is read here, above
    the export layer, because its config and statistics file belong to :mod:`selfsup.runs`.
    ``image_size``, ``pixels`` and ``stats`` replace what the backbone or run says."""
    clip, source = (1.0, 99.0), str(backbone)
    if runs.is_run_dir(backbone):
        if weights is not None:
            raise ValueError(f"--weights is for a backbone given by name; the run {backbone} holds its weights")
        cfg = runs.load_run_config(backbone)
        model = _load_backbone(backbone)
        meta, trained_raw = dict(model.meta), (Path(backbone) / runs.DATA_STATS_FILE).is_file()
        pixels = pixels or ("raw" if trained_raw else "8bit")
        stats = stats or (cfg.data.stats if trained_raw else None)
        clip = cfg.data.clip_percentiles
    else:
        model, meta, _ = load_any_backbone(source, weights, channels=3, log=runs.log)
    size = int(image_size or meta.get("image_size") or Config().data.image_size)
    if not image_size and "image_size" not in meta:
        runs.log(f"{source} names no input size: embedding at {size}x{size} (give --image-size)")
    normalization = meta.get("normalization") or {}
    return embed_folder(model, data, out, image_size=size, mean=normalization.get("mean"),
                        std=normalization.get("std"), pixels=pixels or "auto", stats=stats, clip_percentiles=clip,
                        batch_size=batch_size, num_workers=num_workers, device=device, precision=precision,
                        chunk_files=chunk_files, restart=restart, progress=progress, on_chunk=on_chunk,
                        metadata={"embedded_backbone": source, "weights": str(weights) if weights else None},
                        log=runs.log)
