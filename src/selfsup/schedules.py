"""Every schedule of training, as a pure function of progress in [0, 1] (the fraction of the run done, by
steps or by wall-clock budget; see :mod:`selfsup.engine.schedule`).

- :func:`warmup_cosine`: the learning rate (linear warm-up, cosine decay; Goyal et al. 2017, Loshchilov &
  Hutter 2017), also used by the fine-tuning and SGD-linear evaluation protocols;
- :func:`warmup_stable_decay`: the learning rate for runs that may be extended (warm-up, a long constant
  phase, a short final decay; Hu et al., "MiniCPM", 2024; Hägele et al., "Scaling Laws and Compute-Optimal
  Training Beyond Fixed Training Durations", NeurIPS 2024, whose 1-sqrt decay shape is the default), and its
  ``cooldown`` form, the infinite schedule of continual pre-training (warm-up, a cool-down to a constant
  level, the constant phase, a final anneal; Ibrahim et al., "Simple and Scalable Strategies to Continually
  Pre-train Large Language Models", TMLR 2024, section 7);
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


DECAY_SHAPES = ("1-sqrt", "linear", "cosine")


def _decayed(t: float, shape: str) -> float:
    """1 -> 0 over t in [0, 1], along ``shape``."""
    if shape == "1-sqrt":
        return 1 - math.sqrt(t)
    if shape == "linear":
        return 1 - t
    if shape == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown decay shape '{shape}': one of {', '.join(DECAY_SHAPES)}")


def warmup_stable_decay(progress: float, warmup: float, decay: float, final_fraction: float, shape: str = "1-sqrt",
                        cooldown: float = 0.0, constant_fraction: float = 1.0) -> float:
    """Linear warm-up over the first ``warmup``; with ``cooldown``, a cosine from the peak to
    ``constant_fraction`` over the next ``cooldown`` (the infinite schedule); constant until the last ``decay``
    of training; then down to ``final_fraction`` along ``shape``. Every value before the decay starts is the
    same whatever the run's length, which is what lets a run be extended from its last checkpoint before the
    decay (:func:`decay_start`) without re-warming."""
    progress = _clamp(progress)
    if warmup > 0 and progress < warmup:
        return progress / warmup
    start = decay_start(decay)
    level = constant_fraction if cooldown > 0 else 1.0
    if cooldown > 0 and progress < min(warmup + cooldown, start):
        t = (progress - warmup) / cooldown
        level = constant_fraction + (1 - constant_fraction) * 0.5 * (1 + math.cos(math.pi * t))
    if progress < start:
        return level
    t = (progress - start) / max(decay, 1e-12)
    return final_fraction + (level - final_fraction) * _decayed(t, shape)


def decay_start(decay: float) -> float:
    """Where the final decay of :func:`warmup_stable_decay` begins, as progress."""
    return 1.0 - decay
