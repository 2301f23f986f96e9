"""The method contract: what the engine needs from a method (a sketch, not a base class).

A method is an ``nn.Module`` with
- ``views``: a :class:`~selfsup.views.ViewSpec` telling the pipeline what to deliver per sample;
- ``backbone``: the module that gets exported;
- ``forward(batch) -> StepOutput``; ``batch["views"]`` is a list of tensors (B, C, H, W), one per view;
- optionally ``on_step(progress)`` with progress in [0, 1] (EMA momentum, temperature schedules).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class StepOutput:
    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    embeddings: torch.Tensor | None = None  # (B, D) what the collapse monitor watches
