"""Save and load a backbone as ``backbone.safetensors`` + ``backbone.json``.

The weights file holds the backbone's own state dict (floating tensors as contiguous fp32 on CPU); the JSON
holds what is needed to rebuild and use it: the backbone ``spec`` (see :mod:`selfsup.backbones`), the
feature width, the input size and the normalization the backbone was trained with. The same JSON is also
stored in the safetensors header (key ``selfsup``), so a weights file that lost its JSON still loads.

:func:`load_backbone` also reads the Hugging Face-style folder of ``selfsup export --format hf``
(:mod:`selfsup.export.hf_folder`): ``model.safetensors`` with ``config.json``, whose ``selfsup`` section is
this metadata.

Both files are written atomically (:mod:`selfsup.files`: temporary file in the same folder, fsync,
``os.replace``): a crash or a full disk leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from selfsup import __version__
from selfsup.backbones import backbone_from_spec
from selfsup.files import atomic_path, write_json_atomic

WEIGHTS_NAME = "backbone.safetensors"
META_NAME = "backbone.json"
HEADER_KEY = "selfsup"
# Keys that save_backbone writes itself; ``extra`` may not override them.
RESERVED_KEYS = ("spec", "num_features", "image_size", "normalization", "selfsup_version", "format")
# ``format`` values load_backbone understands. Exported timm / torchvision files hold the state dict of the
# backbone's inner ``.model``; their JSON names the prefix that turns it back into the backbone's own keys.
LOADABLE_FORMATS = ("selfsup", "safetensors", "timm", "torchvision", "hf")
# A Hugging Face-style model folder (the file names timm and transformers use); its config.json keeps selfsup's
# metadata under HF_SECTION.
HF_CONFIG_NAME = "config.json"
HF_WEIGHTS_NAME = "model.safetensors"
HF_SECTION = "selfsup"


# ----------------------------------------------------------------------------------------- atomic writes
def save_safetensors_atomic(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> Path:
    """``tensors`` as a safetensors file at ``path``, written atomically (see :mod:`selfsup.files`)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


# ----------------------------------------------------------------------------------------------- helpers
def unwrap_backbone(module: nn.Module) -> nn.Module:
    """The backbone inside DataParallel / DistributedDataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            module = module._orig_mod
        else:
            return module


def portable_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with floating tensors as fp32, every tensor on CPU, contiguous and not sharing memory."""
    out = {}
    for key, t in module.state_dict().items():
        t = t.detach()
        dtype = torch.float32 if t.is_floating_point() else t.dtype
        out[key] = t.to(device="cpu", dtype=dtype).clone(memory_format=torch.contiguous_format)
    return out


def _float_list(name: str, values: Any, channels: int) -> list[float]:
    if isinstance(values, torch.Tensor):
        values = values.flatten().tolist()
    elif isinstance(values, (int, float)):
        values = [values] * channels
    values = [float(v) for v in values]
    if len(values) != channels:
        raise ValueError(f"normalization {name} has {len(values)} values but the backbone takes {channels} "
                         f"input channels: give one value per channel (or a single number for all)")
    return values


# ------------------------------------------------------------------------------------------------- save
def save_backbone(backbone: nn.Module, out_dir: str | os.PathLike, *, image_size: int,
                  mean: Sequence[float] | float, std: Sequence[float] | float,
                  extra: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/backbone.safetensors`` and ``out_dir/backbone.json``; return the weights path.

    ``mean`` / ``std``: one value per input channel (or one number for all), in the units the backbone was
    fed (usually 0-1 scaled pixels). ``extra``: more JSON-able keys for ``backbone.json`` (method, epochs,
    ...); it may not override the keys written here.
    """
    backbone = unwrap_backbone(backbone)
    spec = getattr(backbone, "spec", None)
    if not isinstance(spec, dict) or "name" not in spec:
        raise TypeError(f"{type(backbone).__name__} has no `.spec` dict with a 'name': save_backbone needs a "
                        "backbone built by selfsup.backbones.build_backbone")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    channels = int(spec.get("in_channels", 3))
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra may not set {clash}: save_backbone writes these keys itself")
    meta = {
        "spec": spec,
        "num_features": int(backbone.num_features),
        "image_size": int(image_size),
        "normalization": {"mean": _float_list("mean", mean, channels), "std": _float_list("std", std, channels)},
        "selfsup_version": str(__version__),
        "format": "selfsup",
        **extra,
    }
    meta_text = json.dumps(meta)  # fails here, before anything is written, if extra is not JSON-able
    out_dir = Path(out_dir)
    weights = save_safetensors_atomic(portable_state_dict(backbone), out_dir / WEIGHTS_NAME,
                                      metadata={"format": "pt", HEADER_KEY: meta_text})
    write_json_atomic(out_dir / META_NAME, meta)
    return weights


# ------------------------------------------------------------------------------------------------- load
def _hf_pair(folder: Path) -> tuple[Path, Path] | None:
    weights, config = folder / HF_WEIGHTS_NAME, folder / HF_CONFIG_NAME
    return (weights, config) if weights.is_file() and config.is_file() else None


def resolve_backbone_files(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(weights file, its JSON or None)`` for a run directory / folder, a Hugging Face-style folder
    (``model.safetensors`` + ``config.json``) or a ``.safetensors`` file.

    The JSON of ``x.safetensors`` is ``x.json`` next to it (``config.json`` for ``model.safetensors``).
    Raises FileNotFoundError naming what was looked for.
    """
    path = Path(path)
    if path.is_file() and path.name == HF_CONFIG_NAME and _hf_pair(path.parent):
        path = path.parent  # the config of a model folder was given: use the folder
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file() and _hf_pair(path):
            return _hf_pair(path)
        if not weights.is_file():
            others = sorted(p.name for p in path.glob("*.safetensors"))
            hint = ""
            if others:
                hint = f" It holds {others}: pass one of these files directly."
            elif (path / "checkpoints").is_dir():
                hint = (" It has checkpoints/ but no exported backbone: the run may not have finished "
                        "(resume it, or export from a checkpoint).")
            raise FileNotFoundError(f"no backbone in directory {path}: looked for {weights}.{hint}")
    elif path.is_file():
        if path.suffix == ".json" and path.with_suffix(".safetensors").is_file():
            path = path.with_suffix(".safetensors")  # the metadata file was given: use its weights
        if path.suffix != ".safetensors":
            raise ValueError(f"{path} is not a .safetensors file: pass a run directory, the folder holding "
                             f"{WEIGHTS_NAME}, or a .safetensors file")
        weights = path
    else:
        looked = path if path.suffix == ".safetensors" else f"{path} (a directory holding {WEIGHTS_NAME})"
        raise FileNotFoundError(f"no backbone found: {looked} does not exist")
    meta = weights.with_suffix(".json")
    if not meta.is_file() and weights.name == HF_WEIGHTS_NAME and _hf_pair(weights.parent):
        meta = weights.parent / HF_CONFIG_NAME
    return weights, (meta if meta.is_file() else None)


def _hf_section(config: dict[str, Any], config_path: Path) -> dict[str, Any]:
    """selfsup's metadata in a model folder's ``config.json``; a folder of another library is named as such."""
    meta = config.get(HF_SECTION)
    if not isinstance(meta, dict):
        arch = config.get("architecture") or config.get("architectures")
        raise ValueError(f"{config_path} has no '{HF_SECTION}' section: the folder (architecture {arch!r}) was not "
                         "written by `selfsup export --format hf`, so it holds no selfsup backbone spec; load it with "
                         "the library that wrote it (a timm folder: timm.create_model('local-dir:<folder>'))")
    return meta


def read_backbone(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """Read weights and metadata without building the model: ``(state_dict, meta, weights_path)``.

    The state dict has the selfsup backbone's own keys whatever format the file was exported in.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    weights, meta_path = resolve_backbone_files(path)
    if meta_path is not None:
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_path} is not valid JSON ({e})") from e
        if meta_path.name == HF_CONFIG_NAME:
            meta = _hf_section(meta, meta_path)
    else:
        with safe_open(str(weights), framework="pt") as f:
            header = (f.metadata() or {}).get(HEADER_KEY)
        if header is None:
            raise FileNotFoundError(f"no metadata for {weights}: looked for {weights.with_suffix('.json')} and "
                                    f"for a '{HEADER_KEY}' entry in the safetensors header; without the backbone "
                                    "spec the model cannot be rebuilt")
        meta = json.loads(header)
    fmt = meta.get("format", "selfsup")
    if fmt not in LOADABLE_FORMATS or "spec" not in meta:
        raise ValueError(f"{meta_path or weights} does not describe a selfsup backbone (format={fmt!r}, "
                         f"spec {'present' if 'spec' in meta else 'missing'})")
    state = load_file(str(weights), device="cpu")
    prefix = meta.get("state_dict_prefix", "")
    if prefix:
        state = {prefix + k: v for k, v in state.items()}
    return state, meta, weights


def load_backbone(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved backbone, load its weights strictly, put it in eval mode on ``device``.

    ``path``: a run directory, the folder holding ``backbone.safetensors``, a ``.safetensors`` file (also the
    ones written by :func:`selfsup.export.export_backbone`), or the model folder of ``--format hf``. The JSON metadata is attached as
    ``model.meta``.
    """
    state, meta, weights = read_backbone(path)
    model = backbone_from_spec(meta["spec"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"weights in {weights} do not match the backbone rebuilt from its spec "
                           f"{meta['spec']}: {e}") from e
    if "num_features" in meta and int(meta["num_features"]) != int(model.num_features):
        raise RuntimeError(f"{weights}: rebuilt backbone has {model.num_features} features, metadata says "
                           f"{meta['num_features']}")
    model.to(device).eval()
    model.meta = meta
    return model
