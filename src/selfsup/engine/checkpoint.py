"""Atomic checkpoints with everything an exact resume needs.

A checkpoint holds the method's state (backbone, heads, teachers, queues, buffers), the optimizer, the
loop position (:class:`LoopState`: step, epoch, batch within the epoch, elapsed time) and the RNG states of
every rank. View randomness is derived from (seed, epoch, sample index), so DataLoader workers hold no RNG
state worth saving. It lives at :func:`selfsup.runs.checkpoint_path` of the run directory.
"""
from __future__ import annotations

import random
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from selfsup.dist import barrier
from selfsup.files import atomic_path
from selfsup.runs import checkpoint_path


@dataclass
class LoopState:
    """Where the training loop stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed
    elapsed: float = 0.0  # seconds of training so far, over all segments of a resumed run
    images_seen: int = 0


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file, fsync, then rename: a crash never leaves a half-written checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = checkpoint_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: nothing to resume (was the run stopped before its first checkpoint?)")
    return torch.load(path, map_location="cpu", weights_only=False)


def save_training_state(path: Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer, state: LoopState,
                        config: dict, dist_info) -> None:
    """Every rank's RNG state gathered, the rest from this process; the main rank writes, all ranks wait."""
    states = [None] * dist_info.world_size
    if dist_info.world_size > 1:
        dist.all_gather_object(states, rng_state())
    else:
        states = [rng_state()]
    if dist_info.is_main:
        atomic_save({"method": method.state_dict(), "optimizer": optimizer.state_dict(), "loop": asdict(state),
                     "rng": states, "scaler": None, "config": config}, path)
    barrier()


def load_training_state(path: Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        dist_info) -> LoopState:
    """Restore ``method``, ``optimizer`` and this rank's RNG from a checkpoint (file or run directory); returns
    the loop position to continue from."""
    saved = load_checkpoint(path)
    method.load_state_dict(saved["method"])
    optimizer.load_state_dict(saved["optimizer"])
    rng = saved["rng"]
    if len(rng) != dist_info.world_size:
        warnings.warn(f"checkpoint has RNG states of {len(rng)} ranks, this run has {dist_info.world_size}: "
                      "the data order is unchanged but stochastic layers will differ from an uninterrupted run")
    set_rng_state(rng[dist_info.rank % len(rng)])
    return LoopState(**saved["loop"])
