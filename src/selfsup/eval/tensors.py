"""Inputs of the feature protocols: tensors or numpy arrays, taken as tensors without a copy where possible."""
from __future__ import annotations

import numpy as np
import torch


def as_tensor(x, name: str) -> torch.Tensor:
    """``x`` as a tensor (numpy arrays share their memory); a TypeError naming ``name`` when it cannot be one."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    try:
        return torch.as_tensor(x)
    except Exception as exc:  # pragma: no cover - message only
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}") from exc
