"""Method registry: one file per method, registered here by name."""
from __future__ import annotations

import difflib

import torch.nn as nn
from pydantic import ValidationError

from selfsup.config import ConfigError, _friendly
from selfsup.methods.base import StepOutput
from selfsup.methods.simclr import SimCLR

METHODS: dict[str, type[nn.Module]] = {"simclr": SimCLR}


def method_class(name: str) -> type[nn.Module]:
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"config key 'method': unknown method '{name}'.{hint} Registered: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def validate_method_options(name: str, options: dict):
    cls = method_class(name)
    try:
        return cls.Options.model_validate(options or {})
    except ValidationError as error:
        raise _friendly(error, cls.Options, f"options of method '{name}'", prefix="method_options.") from None


def build_method(name: str, backbone: nn.Module, options: dict | None = None) -> nn.Module:
    return method_class(name)(backbone, validate_method_options(name, options or {}))


__all__ = ["METHODS", "StepOutput", "build_method", "method_class", "validate_method_options"]
