"""The Python API, mirroring the CLI: ``selfsup.train``, ``selfsup.evaluate``, ``selfsup.load_backbone``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from selfsup.config import build_config


def train(recipe: str | Path | None = None, overrides: list[str] | None = None, resume: str | Path | None = None,
          **sections: Any) -> Path:
    """Pretrain (and evaluate/export) a backbone; returns the run directory.

    ``selfsup.train("demo", ["train.budget=60s"])`` or ``selfsup.train(method="simclr", data={"source": "imgs/"},
    train={"epochs": 10})``. With ``resume=RUN_DIR`` the run continues from its last checkpoint (overrides apply).
    """
    from selfsup import run

    if resume is not None:
        return run.train(None, resume=resume, resume_overrides=overrides)
    return run.train(build_config(recipe, overrides, **sections))


def evaluate(run_dir: str | Path, data: str | None = None) -> dict:
    """Evaluate a run's backbone with kNN and linear probe beside the baselines; writes results.json."""
    from selfsup import run

    return run.evaluate_run(run_dir, data=data)


def load_backbone(path: str | Path, device: str = "cpu"):
    """A run's (or a backbone.safetensors file's) backbone, ready for feature extraction."""
    from selfsup.export import load_backbone as _load

    return _load(path, device=device)
