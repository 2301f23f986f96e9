"""The method contract: what the engine needs from a method (docs/ARCHITECTURE.md, "The method contract").

A method is a :class:`Method`: an ``nn.Module`` with
- ``views``: a :class:`~selfsup.views.ViewSpec` telling the pipeline what to deliver per sample;
- ``backbone``: the module that gets exported;
- ``forward(batch) -> StepOutput``; ``batch["views"]`` is a list of tensors (B, C, H, W), one per view;
- the hooks below, whose defaults do nothing, so the engine calls them without probing.

:class:`Method` has no behaviour of its own beyond those defaults (composition over inheritance: heads, losses,
teachers and queues are parts a method assembles). Each method declares its options as a subclass of
:class:`MethodOptions` (unknown keys are errors) and its own ``test_options``: the few overrides that make it
tiny enough for the parametrized tests, which take every registered method from :data:`METHODS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict

from selfsup.config import ConfigError
from selfsup.registry import Registry
from selfsup.views import ViewSpec

METHODS: Registry[type["Method"]] = Registry("method", key="method", error=ConfigError)


@dataclass
class StepOutput:
    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    embeddings: torch.Tensor | None = None  # (B, D) what the collapse monitor watches
    #: (B, K) a teacher's target distributions (rows sum to 1), for methods with prototype heads (DINO, iBOT): the
    #: collapse monitor records their entropy and warns when they are uniform (entropy near ln K)
    targets: torch.Tensor | None = None


class MethodOptions(BaseModel):
    """Base of every method's options (``method_options.*``): unknown keys fail with the closest valid key."""

    model_config = ConfigDict(extra="forbid")


class Method(nn.Module):
    """The contract (see the module docstring). Subclasses set ``Options`` and build ``views`` and ``backbone``."""

    Options: ClassVar[type[MethodOptions]] = MethodOptions
    #: overrides of ``Options`` that make the method tiny for the tests (e.g. small heads, few prototypes)
    test_options: ClassVar[dict[str, Any]] = {}
    #: the method is a supervised reference that reads ``batch["label"]`` (SupCon)
    needs_labels: ClassVar[bool] = False
    #: under DDP, convert BatchNorm to SyncBatchNorm unless ``train.sync_batchnorm`` says otherwise: methods whose
    #: loss reads batch statistics through BN (BYOL, SimSiam, SwAV, DINO)
    sync_batchnorm: ClassVar[bool] = False
    #: the method works only on a backbone with token access (ViTBackbone): masked and predictive methods
    needs_vit: ClassVar[bool] = False
    #: the field kind its views are made for (selfsup.fields): "image" for methods written with image crops (which
    #: other kinds adapt, selfsup.views.kinds.adapt_views); "table", "points", "graph" for T-JEPA, Point-MAE, GraphMAE
    field_kind: ClassVar[str] = "image"

    views: ViewSpec
    backbone: nn.Module

    def forward(self, batch: dict) -> StepOutput:  # pragma: no cover - every method defines it
        raise NotImplementedError

    def on_step(self, progress: float) -> None:
        """Before the step's forward, with progress in [0, 1]: EMA momentum, temperature schedules."""

    def before_optimizer_step(self, progress: float) -> None:
        """After backward, before the optimizer: e.g. DINO and SwAV cancel head gradients early on."""

    def after_optimizer_step(self, progress: float) -> None:
        """After the optimizer: e.g. EMA teachers, prototype normalisation."""

    def image_text_towers(self) -> nn.Module | None:
        """The image-text methods' two towers (:class:`~selfsup.backbones.towers.ImageTextTowers`), which the run
        saves beside the backbone for zero-shot evaluation and image-text retrieval; None for the others."""
        return None

    def reconstruct(self, images: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Rows of a picture of what the pretext task learnt (input, masked input, reconstruction), each
        (B, C, H, W) in the normalized space of ``images``; None for methods that draw nothing."""
        return None
