"""Export a backbone as a Hugging Face-style model folder (``selfsup export RUN --format hf``).

::

    FOLDER/
      config.json        what the weights are and how to preprocess for them (below)
      model.safetensors  the state dict
      README.md          a model card stub: how to load it with selfsup (and with timm where timm can)

This is the layout public models use (a Hugging Face Hub model repository). For a backbone that exports to
``timm`` it is timm's own: ``model.safetensors`` holds the timm model's state dict and ``config.json`` carries
timm's keys (``architecture``: the timm model name, ``model_args``, ``pretrained_cfg`` with input size, mean and
std), so ``timm.create_model("local-dir:FOLDER", pretrained=True)`` builds the architecture and loads the weights
strictly. For the others ``architecture`` is the selfsup backbone name and the state dict has the backbone's own
keys (``library_name: selfsup``). Every ``config.json`` also says, at the top, the selfsup backbone (``backbone``:
its spec), image size, mean, std, number of channels and feature width, and keeps the backbone's full metadata
in its ``selfsup`` section (:mod:`selfsup.export.backbone_io`; ``state_dict_prefix`` maps the file's keys to the
backbone's), which is what ``selfsup.load_backbone(FOLDER)`` reads. The same section is in the safetensors
header, so ``model.safetensors`` alone still loads.

The evaluation transform these numbers describe (:class:`selfsup.views.Preprocess`, images): shorter side
resized to ``image_size`` (bilinear, antialiased), centre crop, pixels in [0, 1], then ``(x - mean) / std``:
timm's ``crop_pct=1.0``, ``interpolation="bilinear"``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from selfsup.export.backbone_io import HEADER_KEY, HF_CONFIG_NAME, HF_SECTION, HF_WEIGHTS_NAME, save_safetensors_atomic
from selfsup.export.formats import (EXPORT_FORMATS, INNER_PREFIX, ExportFormat, inner_state_dict, load_strictly,
                                    preprocess_text, spatial_dims, timm_create_args)
from selfsup.files import write_atomic, write_json_atomic

CARD_NAME = "README.md"
TIMM_CALL_KEYS = ("model_name", "pretrained", "num_classes")  # create_model's own, not the architecture's


def _hf_why_not(spec: dict[str, Any]) -> str | None:
    return None  # every backbone has a state dict and a spec


def _exports_to_timm(spec: dict[str, Any]) -> bool:
    return EXPORT_FORMATS.get("timm").why_not(spec) is None


def _timm_weights(state: dict[str, torch.Tensor], spec: dict[str, Any], src: Path) -> tuple[dict, dict]:
    """``(timm state dict, create_model arguments)``, checked by loading strictly into the timm model."""
    import timm  # a dependency of selfsup; imported here as formats.py does, only when a timm model is built

    call = timm_create_args(spec)
    weights = inner_state_dict(state, spec, src)
    load_strictly(timm.create_model(**call), weights, spec, "hf")
    return weights, call


def hf_config(meta: dict[str, Any], timm_call: dict[str, Any] | None) -> dict[str, Any]:
    """``config.json`` of the folder for the backbone metadata ``meta`` (timm's layout when ``timm_call``)."""
    spec, norm, size = meta["spec"], meta["normalization"], int(meta["image_size"])
    channels = int(spec.get("in_channels", 3))
    spatial = spatial_dims(spec)
    config: dict[str, Any] = {
        "architecture": timm_call["model_name"] if timm_call else spec["name"],
        "library_name": "timm" if timm_call else "selfsup",
        "backbone": spec,
        "num_channels": channels,
        "image_size": size,
        "mean": norm["mean"],
        "std": norm["std"],
        "num_features": int(meta["num_features"]),
        "num_classes": 0,
    }
    if timm_call:
        config["model_args"] = {k: v for k, v in timm_call.items() if k not in TIMM_CALL_KEYS}
    config["pretrained_cfg"] = {"input_size": [channels, *([size] * spatial)], "mean": norm["mean"], "std": norm["std"],
                                "crop_pct": 1.0, "crop_mode": "center", "interpolation": "bilinear", "num_classes": 0}
    config[HF_SECTION] = meta
    return config


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def model_card(config: dict[str, Any], folder_name: str) -> str:
    """A README.md stub: what the backbone is, how to load it, how to preprocess for it."""
    meta, spec = config[HF_SECTION], config["backbone"]
    method = f", pre-trained with selfsup's `{meta['method']}`" if meta.get("method") else ""
    size = " x ".join(str(s) for s in config["pretrained_cfg"]["input_size"][1:])
    lines = [
        "---", f"library_name: {config['library_name']}", "tags:", "- selfsup", "- self-supervised",
        "- image-feature-extraction", "---", "",
        f"# {spec['name']}", "",
        f"A `{spec['name']}` backbone{method}: {config['num_channels']}-channel inputs of {size}, pooled features "
        f"of width {config['num_features']}. Backbone options (selfsup spec): `{json.dumps(spec)}`.", "",
        f"## Load with selfsup (`{folder_name}`: the path of this folder)", "", "```python", "import selfsup", "",
        f"model = selfsup.load_backbone({folder_name!r})  # eval mode; model(x) -> (batch, {config['num_features']})",
        "```", "",
    ]
    if config["library_name"] == "timm":
        lines += ["## Load with timm", "", "```python", "import timm", "",
                  f"model = timm.create_model('local-dir:{folder_name}', pretrained=True).eval()  # the same features",
                  "data_config = timm.data.resolve_data_config({}, model=model)  # size, mean, std below",
                  "```", ""]
    lines += [
        "## Preprocessing", "",
        _sentence(preprocess_text(spec, config["image_size"])) + ", per channel with", "",
        f"- mean: `{config['mean']}`", f"- std: `{config['std']}`", "",
        f"Files: `{HF_CONFIG_NAME}` (architecture, preprocessing, and the selfsup metadata under `{HF_SECTION}`), "
        f"`{HF_WEIGHTS_NAME}` (weights). Written by `selfsup export --format hf` (selfsup "
        f"{meta.get('selfsup_version', '?')}).", "",
    ]
    return "\n".join(lines)


def write_hf_folder(state: dict[str, torch.Tensor], info: dict[str, Any], out: Path) -> None:
    """The ``hf`` format's writer (:class:`~selfsup.export.formats.ExportFormat`): the folder ``out``."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={out} is a file; the hf format writes a folder: give a folder path")
    spec = info["spec"]
    src = Path(info["exported_from"])
    timm_call = None
    if _exports_to_timm(spec):
        state, timm_call = _timm_weights(state, spec, src)
    meta = {**info, "weights": HF_WEIGHTS_NAME, "state_dict_prefix": INNER_PREFIX if timm_call else ""}
    config = hf_config(meta, timm_call)
    header = json.dumps(meta)  # fails here, before anything is written, if the metadata is not JSON-able
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors_atomic(state, out / HF_WEIGHTS_NAME, metadata={"format": "pt", HEADER_KEY: header})
    write_atomic(out / CARD_NAME, model_card(config, out.name))
    write_json_atomic(out / HF_CONFIG_NAME, config)  # last: a folder with a config.json is complete


EXPORT_FORMATS.add("hf", ExportFormat(_hf_why_not, write=write_hf_folder, suffix=""))

__all__ = ["CARD_NAME", "hf_config", "model_card", "write_hf_folder"]
