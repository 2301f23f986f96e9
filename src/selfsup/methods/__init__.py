"""Method registry: one file per method, registered here by name."""
from __future__ import annotations

import difflib

import torch.nn as nn
from pydantic import ValidationError

from selfsup.config import ConfigError, _friendly
from selfsup.methods.base import StepOutput
from selfsup.methods.barlow_twins import BarlowTwins
from selfsup.methods.byol import BYOL
from selfsup.methods.cmae import CMAE
from selfsup.methods.dino import DINO
from selfsup.methods.ibot import IBOT
from selfsup.methods.ijepa import IJEPA
from selfsup.methods.lejepa import LeJEPA
from selfsup.methods.mae import MAE
from selfsup.methods.moco_v2 import MoCoV2
from selfsup.methods.moco_v3 import MoCoV3
from selfsup.methods.nnclr import NNCLR
from selfsup.methods.rotnet import RotNet
from selfsup.methods.simclr import SimCLR
from selfsup.methods.simmim import SimMIM
from selfsup.methods.simsiam import SimSiam
from selfsup.methods.supcon import SupCon
from selfsup.methods.swav import SwAV
from selfsup.methods.vicreg import VICReg

METHODS: dict[str, type[nn.Module]] = {
    "simclr": SimCLR,
    "moco_v2": MoCoV2,
    "moco_v3": MoCoV3,
    "byol": BYOL,
    "simsiam": SimSiam,
    "barlow_twins": BarlowTwins,
    "vicreg": VICReg,
    "swav": SwAV,
    "dino": DINO,
    "nnclr": NNCLR,
    "rotnet": RotNet,
    "supcon": SupCon,  # supervised reference: needs labels
    "ijepa": IJEPA,
    "lejepa": LeJEPA,
    "ibot": IBOT,
    "mae": MAE,
    "simmim": SimMIM,
    "cmae": CMAE,
}


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
