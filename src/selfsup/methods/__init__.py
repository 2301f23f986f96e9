"""Methods: one file per method, each registered where it is defined (``@METHODS.register("simclr")``).

Every module of this package is imported here, so a new method is one new file (plus its recipe); the
parametrized tests take every registered method from :data:`METHODS`. The contract is
:class:`~selfsup.methods.base.Method`.
"""
from __future__ import annotations

import torch.nn as nn
from pydantic import ValidationError

from selfsup.config import ConfigError, friendly_error
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.methods.common import has_token_access
from selfsup.registry import import_submodules

import_submodules(__name__, skip=("base", "common"))


def method_class(name: str) -> type[Method]:
    return METHODS.get(name)


def validate_method_options(name: str, options: dict) -> MethodOptions:
    cls = method_class(name)
    try:
        return cls.Options.model_validate(options or {})
    except ValidationError as error:
        raise friendly_error(error, cls.Options, f"options of method '{name}'", prefix="method_options.") from None


def build_method(name: str, backbone: nn.Module, options: dict | None = None) -> Method:
    """The registered method ``name`` on ``backbone`` with ``options`` (``method_options``), validated."""
    cls = method_class(name)
    if cls.needs_vit and not has_token_access(backbone):
        got = getattr(backbone, "spec", {}).get("name", type(backbone).__name__)
        raise ConfigError(f"config key 'backbone.name': {cls.__name__} needs a ViT backbone (vit_micro_cpu, "
                          f"vit_tiny_cpu or timm:vit_*), got '{got}'; set backbone.name=vit_micro_cpu")
    return cls(backbone, validate_method_options(name, options or {}))


__all__ = ["METHODS", "Method", "MethodOptions", "StepOutput", "build_method", "method_class",
           "validate_method_options"]
