"""Weights from local files into a backbone (``backbone.weights=FILE``, ``selfsup eval --weights FILE``), never a
download, and never by running a file's pickled code.

What is read: a ``.safetensors`` file; a torch file (``.pt``, ``.pth``, ``.bin``, ...) read with
``torch.load(weights_only=True)``, which unpickles tensors and plain containers only (a file holding other
objects is refused, naming them, with the way to convert a trusted one); a saved selfsup backbone or run folder
(its ``backbone.safetensors``); a Hugging Face-style folder (``config.json`` + ``model.safetensors``, sharded
``model.safetensors.index.json`` or ``pytorch_model.bin``; open_clip's ``open_clip_config.json`` +
``open_clip_model.safetensors``), such as timm's models on the hub and selfsup's ``hf`` export.

Inside the file, :mod:`selfsup.backbones.weight_layouts` finds the backbone's tensors: wrappers (``state_dict``,
``model``, ``teacher``, ``student``) and prefixes (``module.``, ``backbone.``, ``visual.``) are looked through,
plain timm / torchvision / open_clip state dicts are matched to the backbone's inner ``.model``, DINOv2 and
OpenAI CLIP / open_clip ViT names are converted to timm's, and a ViT's position embedding of another grid is
interpolated. Every backbone tensor must be found (BatchNorm's ``num_batches_tracked`` may be absent); tensors
the backbone has no place for (a classifier, a text tower, a DINO head) are ignored and listed. The log says
how many tensors were loaded from which layout. When the file's first layer takes another number of input bands
than the backbone (RGB weights for 13-band data), that layer is carried to the backbone's bands
(:mod:`selfsup.backbones.channels`, ``carry``) and said so.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from safetensors.torch import load_file

from selfsup.backbones.channels import carry_input_weight, input_layer_key
from selfsup.backbones.weight_layouts import FlatState, Layout, best_layout, fit_vit_positions, flatten_tensors, \
    inner_library

BACKBONE_WEIGHTS_FILE = "backbone.safetensors"  # the weights of a saved selfsup backbone (selfsup.export)
# The weights of a Hugging Face-style folder, in the order they are looked for, and its configs.
FOLDER_WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
FOLDER_CONFIG_FILES = ("config.json", "open_clip_config.json")
SHOWN = 4  # keys shown in a message


# ------------------------------------------------------------------------------------------ safe reading
def _refusal(path: Path, what: str, hint: str) -> str:
    try:  # names the objects without unpickling anything
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip torch file: the names are not listed
        found = []
    named = f" ({', '.join(found[:SHOWN])}{' ...' if len(found) > SHOWN else ''})" if found else ""
    return (f"{path}: this {what} holds pickled Python objects besides tensors{named}. selfsup loads only tensors "
            "and plain containers (torch.load with weights_only=True) and never runs code from a file. " + hint)


def convert_hint(path: Path) -> str:
    """How to turn a trusted torch file into a safetensors file selfsup reads."""
    out = path.with_suffix(".safetensors")
    return (f"If you trust the file, convert its tensors once: python -c \"import torch; from safetensors.torch "
            f"import save_file; s = torch.load('{path}', weights_only=False); s = s.get('state_dict', s); "
            f"save_file({{k: v.contiguous() for k, v in s.items()}}, '{out}')\" and give {out.name} instead")


def load_tensors_only(path: str | Path, what: str = "weights file", allow: Sequence[Any] = (),
                      hint: str | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors, numbers, strings and plain containers only,
    no pickled code ever runs. ``allow``: further harmless types (``torch.serialization.safe_globals`` entries)
    tried only when the plain load refuses the file. Refusals raise ValueError naming the file, the objects and
    ``hint`` (default: how to convert a trusted file)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if allow:
            try:
                with torch.serialization.safe_globals(list(allow)):
                    return torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                pass
        raise ValueError(_refusal(path, what, hint if hint is not None else convert_hint(path))) from None
    except (RuntimeError, EOFError, OSError) as error:  # truncated or not a torch file at all
        raise ValueError(f"{path} is not a readable torch {what} ({str(error).splitlines()[0]})") from None


# ---------------------------------------------------------------------------------------------- the files
def weights_file(path: str | Path) -> Path:
    """The weights file of ``path``: the file itself, the ``backbone.safetensors`` of a run or backbone folder,
    or the weights of a Hugging Face-style folder (:data:`FOLDER_WEIGHTS_FILES`)."""
    path = Path(path)
    if path.is_dir():
        for name in (BACKBONE_WEIGHTS_FILE, *FOLDER_WEIGHTS_FILES):
            if (path / name).is_file():
                return path / name
        held = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".pt", ".pth", ".bin"))
        raise FileNotFoundError(f"{path} is a folder without {BACKBONE_WEIGHTS_FILE} or {', '.join(FOLDER_WEIGHTS_FILES)}"
                                f"{f' (it holds {held}: give one of them)' if held else ''}: give a run folder, a saved "
                                "backbone, a Hugging Face-style folder or a .safetensors / .pt file")
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist (weights are read from local files only; nothing "
                                "is downloaded)")
    return path


def _read_file(path: Path) -> Any:
    """What a weights file holds (a dict of tensors for safetensors and shards), read without executing anything."""
    if path.name.endswith(".index.json"):  # a sharded checkpoint: {"weight_map": {key: shard file}}
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as error:
            raise ValueError(f"{path} is not a sharded-checkpoint index ({error})") from None
        return {k: v for shard in shards for k, v in _read_file(path.parent / shard).items()}
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except Exception as error:  # safetensors raises its own error types
            raise ValueError(f"{path} is not a readable safetensors file ({error})") from None
    return load_tensors_only(path)


def read_tensors(path: str | Path) -> FlatState:
    """Every tensor of a weights file (:func:`weights_file`), nested dicts flattened to dotted keys
    (``{"teacher": {"backbone.x": t}}`` -> ``teacher.backbone.x``), read without executing anything."""
    path = weights_file(path)
    state = flatten_tensors(_read_file(path))
    if not state:
        raise ValueError(f"{path} holds no tensors (a state dict, possibly wrapped in dicts, was expected)")
    return state


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a weights file (:func:`weights_file`), the common wrappers ``state_dict``, ``model``,
    ``backbone`` unwrapped, read without executing anything."""
    path = weights_file(path)
    state = _read_file(path)
    for key in ("state_dict", "model", "backbone"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return state


def folder_config(weights: Path) -> dict[str, Any] | None:
    """The ``config.json`` (or ``open_clip_config.json``) beside a Hugging Face-style folder's weights."""
    if weights.name not in FOLDER_WEIGHTS_FILES:
        return None
    for name in FOLDER_CONFIG_FILES:
        try:
            config = json.loads((weights.parent / name).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(config, dict):
            return config
    return None


# ------------------------------------------------------------------------------------------------ report
def _keys(keys: Sequence[str]) -> str:
    return ", ".join(list(keys)[:SHOWN]) + (" ..." if len(keys) > SHOWN else "")


def _file_holds(flat: FlatState) -> str | None:
    """What architecture family the file's names say it holds, and the backbone to use."""
    keys = list(flat)
    proj = next((k for k in keys if k.endswith("patch_embed.proj.weight")), None)
    if proj is not None:
        depth = len({k.split("blocks.")[1].split(".")[0] for k in keys if "blocks." in k})
        width, patch = flat[proj].shape[0], flat[proj].shape[-1]
        return (f"the file holds a ViT (width {width}, {depth} blocks, {patch} px patches): use a ViT backbone of that "
                "shape (timm:<vit name>, or backbone.options for vit_tiny_cpu / vit_micro_cpu)")
    if any(k.endswith("class_embedding") for k in keys) and any("token_embedding" in k for k in keys):
        return "the file is an open_clip / CLIP model: use backbone.name=open_clip:<arch> (or timm:<its ViT>)"
    if any(k.endswith("layer1.0.conv1.weight") for k in keys):
        blocks = len({k.split("layer3.")[1].split(".")[0] for k in keys if "layer3." in k})
        return (f"the file holds a ResNet ({blocks} blocks in layer3; torchvision / timm names): use backbone.name="
                "resnet18 / resnet50 ... or timm:<resnet> of that depth")
    return None


def likely_fix(name: str, flat: FlatState, config: dict[str, Any] | None) -> str:
    """The likely fix of a file that does not fit backbone ``name``."""
    hints, config = [], config or {}
    spec, arch = config.get("backbone"), config.get("architecture")
    if isinstance(spec, dict) and spec.get("name") and spec["name"] != name:  # selfsup's hf export
        options = {k: v for k, v in spec.items() if k not in ("name", "in_channels")}
        hints.append(f"its config.json says it holds the selfsup backbone {spec['name']}: set backbone.name="
                     f"{spec['name']}" + (f" and backbone.options={json.dumps(options)}" if options else ""))
    elif isinstance(arch, str) and not isinstance(spec, dict) and name != f"timm:{arch}":  # timm's layout
        args = config.get("model_args")
        hints.append(f"its config.json names the timm architecture '{arch}': set backbone.name=timm:{arch}"
                     + (f" and backbone.options={json.dumps(args)}" if args else ""))
    elif "model_type" in config:
        hints.append(f"its config.json is a Hugging Face transformers config (model_type '{config['model_type']}'), "
                     "whose names selfsup does not read: use the model's timm files (a config.json with "
                     "'architecture') or its authors' original checkpoint")
    family = _file_holds(flat)
    if family:
        hints.append(family)
    hints.append("prefixes need no setting: the backbone's keys are looked for as they are, under 'model.' (a plain "
                 "timm / torchvision / open_clip file) and below every prefix of the file (module., backbone., "
                 "teacher. ...)")
    return "; ".join(hints)


def _ignored(flat: FlatState, layout: Layout, own: Sequence[str]) -> list[str]:
    """The file's tensors that were not loaded, those below the layout's prefix first (a DINOv2 mask token)."""
    used = layout.sources(own)
    unused = [k for k in flat if k not in used]
    return sorted(unused, key=lambda k: not k.startswith(layout.prefix))


# ------------------------------------------------------------------------------------------------ loading
def _input_layer(model: nn.Module) -> str | None:
    """The key of the backbone's first-layer weight, None when it has none to carry (a channel-wise ViT)."""
    try:
        return input_layer_key(model) if hasattr(model, "spec") else None
    except ValueError:
        return None


def load_weights_into(model: nn.Module, weights: str | Path, log: Callable[[str], None] = print,
                      carry: str | None = None, rgb_bands: Sequence[int] | None = None) -> None:
    """Load a weights file into ``model`` (the rules in the module docstring). ``carry`` (``"repeat"`` or
    ``"rgb_bands"`` with ``rgb_bands``) allows a first layer of another band count; None refuses it."""
    path = weights_file(weights)
    flat = read_tensors(path)
    own = model.state_dict()
    name = getattr(model, "spec", {}).get("name", type(model).__name__)
    layout, others = best_layout(model, flat)
    library = inner_library(model)
    read_as = layout.describe(library) if layout else "no layout (no key of the file is one of the backbone's)"
    state = layout.state() if layout else {}
    optional = [k for k in own if k.endswith("num_batches_tracked") and k not in state]  # older torch files
    state.update({k: own[k] for k in optional})
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{path} does not fit {name}: {len(missing)} of its {len(own)} tensors are missing when the "
                         f"file is read as {read_as} (e.g. {_keys(missing)}). The backbone expects keys like "
                         f"{_keys(list(own))}; the file's keys are like {_keys(list(flat))}. Likely fix: "
                         f"{likely_fix(name, flat, folder_config(path))}")
    notes = fit_vit_positions(model, state)
    first = _input_layer(model)
    if first is not None and state[first].shape != own[first].shape and state[first].ndim >= 2 \
            and state[first].shape[0] == own[first].shape[0] and state[first].shape[2:] == own[first].shape[2:]:
        bands, source_bands = own[first].shape[1], state[first].shape[1]
        if carry is None:
            raise ValueError(f"{path}: its first layer {first} takes {source_bands} bands, the backbone {bands}; "
                             "set backbone.carry=repeat (or rgb_bands with backbone.rgb_bands) to carry it")
        state[first] = carry_input_weight(state[first], bands, carry, rgb_bands)
        notes.append(f"carried {first} of {path.name} from {source_bands} to {bands} input bands ({carry})")
    wrong = [k for k in own if state[k].shape != own[k].shape]
    if wrong:
        shapes = "; ".join(f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the backbone"
                           for k in wrong[:3])
        raise ValueError(f"{path} does not fit {name}: read as {read_as}, {len(wrong)} tensor(s) have other shapes "
                         f"({shapes}); is it the same architecture at another width, depth or patch size? "
                         f"Likely fix: {likely_fix(name, flat, folder_config(path))}")
    model.load_state_dict({k: state[k] for k in own}, strict=True)
    for note in notes:
        log(note)
    log(f"loaded {len(own) - len(optional)} tensors of {path} into {name}, read as {read_as}"
        + (f" (the file also holds all of them under {', '.join(others)}, not read)" if others else ""))
    unexpected = _ignored(flat, layout, list(own))
    if unexpected:
        log(f"ignored {len(unexpected)} tensor(s) of {path.name} that the backbone has no place for: "
            f"{', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")


__all__ = ["BACKBONE_WEIGHTS_FILE", "FOLDER_WEIGHTS_FILES", "convert_hint", "folder_config", "likely_fix",
           "load_tensors_only", "load_weights_into", "read_state_dict", "read_tensors", "weights_file"]
