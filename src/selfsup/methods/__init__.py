"""Methods: one file per method, each registered where it is defined (``@METHODS.register("simclr")``).

Every module of this package is imported here, so a new method is one new file (plus its recipe); the
parametrized tests take every registered method from :data:`METHODS`. The contract is
:class:`~selfsup.methods.base.Method`.
"""
from __future__ import annotations

import torch.nn as nn
from pydantic import ValidationError

from selfsup.config import friendly_error
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
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
    return method_class(name)(backbone, validate_method_options(name, options or {}))


__all__ = ["METHODS", "Method", "MethodOptions", "StepOutput", "build_method", "method_class",
           "validate_method_options"]
