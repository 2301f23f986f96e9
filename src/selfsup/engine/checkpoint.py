"""Atomic checkpoints with everything an exact resume needs.

A checkpoint holds the method's state (backbone, heads, teachers, queues, buffers), the optimizer, the
loop position (:class:`LoopState`: step, epoch, batch within the epoch, elapsed time) and the RNG states of
every rank. View randomness is derived from (seed, epoch, sample index), so DataLoader workers hold no RNG
state worth saving. It lives at :func:`selfsup.runs.checkpoint_path` of the run directory.

Checkpoints hold only tensors and plain containers (the RNG states of python and numpy as tensors, not as
their own pickled objects), so they load with ``torch.load(weights_only=True)``: resuming a run directory
received from someone else never runs code from it. Checkpoints of earlier versions, whose numpy RNG state is a
pickled ndarray, still load: numpy's ndarray and dtype are the only types allowed besides (nothing else of
numpy can run through them); a file holding any other object is refused with the objects named.
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

from selfsup.backbones.weights import load_tensors_only
from selfsup.dist import barrier
from selfsup.engine.sharding import full_training_state, load_full_training_state
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
    # Streamed shards (selfsup.data.stream_order): [rank][stream] -> samples that stream has delivered in this
    # epoch; recomputed from (epoch, batch_in_epoch) on resume, where a mismatch means the shards changed.
    stream_positions: list[list[int]] | None = None
    # train.threads=auto: the intra-op thread count measured at the start (selfsup.engine.threads), reused on resume.
    threads: int | None = None


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain numbers (what ``weights_only`` loading accepts)."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {"python": {"version": version, "state": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (or the pickled python / numpy objects of older checkpoints)."""
    python, numpy = state["python"], state["numpy"]
    if isinstance(python, dict):
        python = (python["version"], tuple(python["state"].tolist()), python["gauss"])
    if isinstance(numpy, dict):
        numpy = (numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                 numpy["cached_gaussian"])
    random.setstate(python)
    np.random.set_state(numpy)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _legacy_numpy_types() -> list[Any]:
    """What the numpy RNG state of an earlier checkpoint unpickles with: an ndarray of a dtype, nothing else
    (under numpy 1's module name too)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
            type(np.dtype(np.uint32))]


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
    saved = load_tensors_only(path, "checkpoint", allow=_legacy_numpy_types(),
                              hint="selfsup writes its checkpoints with tensors and plain values only, so this one was "
                                   "not written by selfsup or was changed since; do not resume from it unless you "
                                   "know where it comes from")
    if not isinstance(saved, dict) or not {"method", "optimizer", "loop", "rng"} <= saved.keys():
        raise ValueError(f"{path} is not a selfsup checkpoint (it lacks the method, optimizer, loop or rng entries)")
    return saved


def save_training_state(path: Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer, state: LoopState,
                        config: dict, dist_info, sharded: bool = False) -> None:
    """Every rank's RNG state gathered, the rest from this process (or, for a sharded method, gathered from every
    rank, the optimizer state keyed by parameter name); the main rank writes, all ranks wait."""
    states = [None] * dist_info.world_size
    if dist_info.world_size > 1:
        dist.all_gather_object(states, rng_state())
    else:
        states = [rng_state()]
    method_state, optimizer_state = full_training_state(method, optimizer) if sharded else (None, None)
    if dist_info.is_main:
        if not sharded:
            method_state, optimizer_state = method.state_dict(), optimizer.state_dict()
        atomic_save({"method": method_state, "optimizer": optimizer_state, "loop": asdict(state), "rng": states,
                     "scaler": None, "config": config, "optimizer_keys": "names" if sharded else "indices"}, path)
    barrier()


def load_training_state(path: Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        dist_info, sharded: bool = False) -> LoopState:
    """Restore ``method``, ``optimizer`` and this rank's RNG from a checkpoint (file or run directory); returns
    the loop position to continue from. A sharded run's checkpoint (optimizer state keyed by parameter names)
    resumes sharded or not, on any number of ranks."""
    saved = load_checkpoint(path)
    if saved.get("optimizer_keys") == "names":
        load_full_training_state(method, optimizer, saved["method"], saved["optimizer"])
    elif sharded:
        raise ValueError(f"{path} was written by an unsharded run (train.parallel=ddp, or one process): resume it "
                         "with train.parallel=ddp; a sharded run cannot read its optimizer state")
    else:
        method.load_state_dict(saved["method"])
        optimizer.load_state_dict(saved["optimizer"])
    rng = saved["rng"]
    if len(rng) != dist_info.world_size:
        warnings.warn(f"checkpoint has RNG states of {len(rng)} ranks, this run has {dist_info.world_size}: "
                      "the data order is unchanged but stochastic layers will differ from an uninterrupted run")
    set_rng_state(rng[dist_info.rank % len(rng)])
    return LoopState(**saved["loop"])
