"""Weights from local files into a backbone: a state dict (``.safetensors``, or a torch file read with
``weights_only=True``) or a saved selfsup backbone (its folder, a run folder), never a download.

The file's keys may be the backbone's own or those of its inner ``.model`` (a plain timm / torchvision state
dict); the layout that covers more of the backbone is the one the file was written in. Every backbone tensor
must be present; keys the backbone has no place for (an ImageNet classifier ``fc.*``) are ignored and
listed. When the file's first layer takes another number of input bands than the backbone (RGB weights for
13-band data), that layer is carried to the backbone's bands (:mod:`selfsup.backbones.channels`, ``carry``)
and said so, so continuing from RGB pre-training on multispectral or gray data is one key:
``backbone.weights=rgb.safetensors``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
from safetensors.torch import load_file

from selfsup.backbones.channels import carry_input_weight, input_layer_key

BACKBONE_WEIGHTS_FILE = "backbone.safetensors"  # the weights of a saved selfsup backbone (selfsup.export)


def weights_file(path: str | Path) -> Path:
    """The state-dict file of ``path``: the file itself, or the ``backbone.safetensors`` of a run or backbone
    folder."""
    path = Path(path)
    if path.is_dir():
        if (path / BACKBONE_WEIGHTS_FILE).is_file():
            return path / BACKBONE_WEIGHTS_FILE
        raise FileNotFoundError(f"{path} is a folder without {BACKBONE_WEIGHTS_FILE}: give a run folder, a saved "
                                "backbone or a .safetensors / .pt file")
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or torch file (common wrappers ``state_dict``, ``model``, ``backbone``
    unwrapped), read without executing anything."""
    path = weights_file(path)
    if path.suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "backbone"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return state


def in_backbone_layout(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with its keys as ``model`` names them: as they are, or under ``model.`` (a plain timm /
    torchvision state dict for a wrapping backbone), whichever covers more of the model's keys."""
    own = model.state_dict().keys()
    candidates = [state]
    if hasattr(model, "model"):
        candidates.append({f"model.{k}": v for k, v in state.items()})
    return max(candidates, key=lambda s: len(own & s.keys()))


def load_weights_into(model: nn.Module, weights: str | Path, log: Callable[[str], None] = print,
                      carry: str | None = None, rgb_bands: Sequence[int] | None = None) -> None:
    """Load a weights file into ``model`` (the rules in the module docstring). ``carry`` (``"repeat"`` or
    ``"rgb_bands"`` with ``rgb_bands``) allows a first layer of another band count; None refuses it."""
    path = weights_file(weights)
    state = in_backbone_layout(model, read_state_dict(path))
    own = model.state_dict()
    name = getattr(model, "spec", {}).get("name", type(model).__name__)
    missing = sorted(own.keys() - state.keys())
    if missing:
        raise ValueError(f"{path} does not fit {name}: {len(missing)} of its {len(own)} tensors are missing (e.g. "
                         f"{', '.join(missing[:3])}); is it the weights of another architecture?")
    first = input_layer_key(model) if hasattr(model, "spec") else None
    if first is not None and state[first].shape != own[first].shape and state[first].ndim >= 2 \
            and state[first].shape[0] == own[first].shape[0] and state[first].shape[2:] == own[first].shape[2:]:
        bands, source_bands = own[first].shape[1], state[first].shape[1]
        if carry is None:
            raise ValueError(f"{path}: its first layer {first} takes {source_bands} bands, the backbone {bands}; "
                             "set backbone.carry=repeat (or rgb_bands with backbone.rgb_bands) to carry it")
        state = {**state, first: carry_input_weight(state[first], bands, carry, rgb_bands)}
        log(f"carried {first} of {path.name} from {source_bands} to {bands} input bands ({carry})")
    unexpected = sorted(state.keys() - own.keys())
    try:
        model.load_state_dict({k: state[k] for k in own}, strict=True)
    except RuntimeError as error:  # shapes differ
        raise ValueError(f"{path} does not fit {name}: {error}") from None
    if unexpected:
        log(f"ignored {len(unexpected)} tensor(s) of {path.name} that the backbone has no place for: "
            f"{', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
