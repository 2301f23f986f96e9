"""Every schedule of training, as a pure function of progress in [0, 1] (the fraction of the run done, by
steps or by wall-clock budget; see :mod:`selfsup.engine.schedule`).

- :func:`warmup_cosine`: the learning rate (linear warm-up, cosine decay; Goyal et al. 2017, Loshchilov &
  Hutter 2017), also used by the fine-tuning and SGD-linear evaluation protocols;
- :func:`cosine_momentum`: EMA teacher momentum rising to 1 (BYOL, Grill et al., NeurIPS 2020, section 3.2);
- :func:`linear_ramp`: a linear ramp from one value to another (I-JEPA's EMA momentum, Assran et al. 2023);
- :func:`warmup_fraction`: how far a warm-up has come (DINO's teacher temperature, Caron et al., ICCV 2021).

A leaf: it imports nothing of selfsup.
"""
from __future__ import annotations

import math


def _clamp(progress: float) -> float:
    return min(max(progress, 0.0), 1.0)


def warmup_cosine(progress: float, warmup: float, final_fraction: float) -> float:
    """Linear warm-up over the first ``warmup`` of training, then cosine decay to ``final_fraction`` (a factor
    of the peak value)."""
    progress = _clamp(progress)
    if warmup > 0 and progress < warmup:
        return progress / warmup
    t = (progress - warmup) / max(1e-12, 1 - warmup)
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * t))


def cosine_momentum(progress: float, base: float, final: float = 1.0) -> float:
    """Momentum rising from ``base`` to ``final`` on a half cosine over training (BYOL, section 3.2)."""
    progress = _clamp(progress)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


def linear_ramp(progress: float, start: float, end: float) -> float:
    """``start`` at progress 0, ``end`` at progress 1, linear in between."""
    return start + _clamp(progress) * (end - start)


def warmup_fraction(progress: float, warmup: float) -> float:
    """0 -> 1 linearly over the first ``warmup`` of training (1 throughout when ``warmup`` is 0)."""
    return min(1.0, progress / warmup) if warmup else 1.0
