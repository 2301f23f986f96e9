"""The Python API, mirroring the CLI: ``selfsup.train``, ``selfsup.evaluate``, ``selfsup.bench``,
``selfsup.load_backbone``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfsup import run, throughput
from selfsup.config import build_config
from selfsup.eval.evaluate import evaluate_run
from selfsup.export import load_backbone as _load_backbone


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
