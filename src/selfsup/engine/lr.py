"""The learning rate of every step: the schedule (``optim.schedule``), layer-wise decay (each group's
``lr_scale``, :func:`selfsup.engine.optim.param_groups`) and the frozen first phase of a backbone that starts
from weights (``optim.freeze_backbone``).

Continued pre-training starts from a backbone that already has good features and heads that have none; a
fresh head's first gradients are large and random, and through a backbone at full learning rate they undo
what the weights knew. So the backbone's groups learn at 0 for the first ``freeze_backbone`` of training
(the heads at the schedule's rate), then warm up linearly over ``optim.warmup`` (the head-first warm-up of
Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution", ICLR 2022,
LP-FT). Batch-norm statistics still follow the data while the weights are held.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from selfsup.config import Config
from selfsup.engine.optim import base_lr, set_lr
from selfsup.schedules import decay_start, warmup_cosine, warmup_stable_decay

#: optim.freeze_backbone when unset and the backbone starts from weights (backbone.weights)
FREEZE_WITH_WEIGHTS = 0.05
#: schedules whose values before the final decay do not depend on the run's length: a finished run extends
EXTENDABLE = ("wsd", "infinite")


def freeze_fraction(cfg: Config) -> float:
    """``optim.freeze_backbone``, or when unset :data:`FREEZE_WITH_WEIGHTS` for a backbone that starts from
    weights and 0 for a random one."""
    if cfg.optim.freeze_backbone is not None:
        return cfg.optim.freeze_backbone
    return FREEZE_WITH_WEIGHTS if cfg.backbone.weights else 0.0


@dataclass(frozen=True)
class LearningRate:
    """The learning rates at a progress in [0, 1] (see the module docstring)."""

    base: float  # optim.lr after the linear scaling rule
    schedule: str
    warmup: float
    final_fraction: float
    decay: float
    decay_shape: str
    cooldown: float
    constant_fraction: float
    freeze: float  # the backbone learns at 0 until this progress

    @classmethod
    def from_config(cls, cfg: Config) -> LearningRate:
        o = cfg.optim
        return cls(base_lr(o, cfg.train.batch_size), o.schedule, o.warmup, o.final_lr_fraction, o.decay,
                   o.decay_shape, o.cooldown if o.schedule == "infinite" else 0.0, o.constant_lr_fraction,
                   freeze_fraction(cfg))

    def factor(self, progress: float) -> float:
        """The schedule's factor of the base learning rate."""
        if self.schedule == "cosine":
            return warmup_cosine(progress, self.warmup, self.final_fraction)
        return warmup_stable_decay(progress, self.warmup, self.decay, self.final_fraction, self.decay_shape,
                                   self.cooldown, self.constant_fraction)

    def backbone_factor(self, progress: float) -> float:
        """0 while the backbone is held still, then a linear warm-up to 1 over ``optim.warmup``."""
        if progress < self.freeze:
            return 0.0
        return min(1.0, (progress - self.freeze) / self.warmup) if self.warmup > 0 and self.freeze > 0 else 1.0

    def apply(self, optimizer: torch.optim.Optimizer, progress: float) -> float:
        """Set every group's learning rate for a step at ``progress``; returns the heads' rate."""
        lr = self.base * self.factor(progress)
        set_lr(optimizer, lr, self.backbone_factor(progress))
        return lr

    @property
    def decay_start(self) -> float | None:
        """Progress where the final decay of an extendable schedule begins (None for cosine): the checkpoint
        written there is where an extension of the finished run continues from."""
        return decay_start(self.decay) if self.schedule in EXTENDABLE else None

    def enters_decay(self, before: float, after: float) -> bool:
        """Whether a step from progress ``before`` to ``after`` crossed into the final decay."""
        start = self.decay_start
        return start is not None and before < start <= after
