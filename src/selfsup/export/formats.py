"""Export a saved backbone to where people use backbones: plain safetensors, timm, torchvision, ONNX
(:mod:`selfsup.export.onnx`) and a Hugging Face-style model folder (:mod:`selfsup.export.hf_folder`).

Every safetensors export is a state dict plus a JSON next to it (same name, ``.json``) that says how to build
the model it loads into, with runnable ``code``. Before anything is written the state dict is loaded with
``strict=True`` into a freshly built target model, so an export that would not load is never produced. A
format with files of its own (``onnx``, ``hf``) registers a ``write`` function and the suffix of its output.

Which formats work:

======================  ===========  =====================  =======================================
backbone                safetensors  timm                   torchvision
======================  ===========  =====================  =======================================
``timm:<name>``         yes          yes (same create_model) no
``vit_*_cpu`` (ViTs)    yes          yes (timm ViT + kwargs) no
torchvision ResNet      yes          standard stem only     yes (cifar stem: JSON gives the changes)
anything else           yes          no                     no
======================  ===========  =====================  =======================================

``hf`` takes every backbone (timm's layout for those that export to ``timm``); ``onnx`` every backbone that
torch.export traces with a dynamic batch size (see its ``why_not``).

The registered ViTs (:mod:`selfsup.backbones.vit`) are timm ``VisionTransformer`` s built with explicit
arguments, so their timm export is ``timm.create_model`` of a timm ViT with those arguments.

timm's ``resnet18/34/50/101`` use the torchvision key names and shapes, so a torchvision ResNet's state
dict loads into them unchanged; timm has no 3x3 stride-1 stem without max-pool, hence no timm export for
the CIFAR stem.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from selfsup.backbones.base import BACKBONES
from selfsup.backbones.torchvision_resnet import TORCHVISION_RESNETS, apply_replacements, replacement_code
from selfsup.backbones.vit import VIT_CONFIGS, registered_vit_timm_args
from selfsup.export.backbone_io import read_backbone, save_safetensors_atomic
from selfsup.fields import VOLUME
from selfsup.files import copy_file_atomic, write_json_atomic
from selfsup.registry import Registry

# Exported timm / torchvision state dicts are the backbone's inner ``.model``; the selfsup keys carry this.
INNER_PREFIX = "model."
#: A target: ``(spec, weights file name) -> (build the empty model, JSON details, loading code)``.
Target = Callable[[dict[str, Any], str], tuple[Callable[[], nn.Module], dict, str]]
#: A format with its own files: ``(state dict with the backbone's own keys, the export's info, out path)``;
#: it writes everything at ``out`` (``info`` holds the saved backbone's metadata, ``format`` and ``exported_from``).
Writer = Callable[[dict[str, torch.Tensor], dict[str, Any], Path], None]


@dataclass(frozen=True)
class ExportFormat:
    """An export format: ``why_not(spec)`` is None when the backbone with ``spec`` exports to it, else the
    reason; ``target`` builds the model the weights load into (None: selfsup's own safetensors file);
    ``write`` replaces both for a format with files of its own, ``suffix`` ends its default output name
    (``""``: the output is a folder)."""

    why_not: Callable[[dict[str, Any]], str | None]
    target: Target | None = None
    write: Writer | None = None
    suffix: str = ".safetensors"


EXPORT_FORMATS: Registry[ExportFormat] = Registry("export format", key="selfsup export --format")


def _is_timm_model(name: str) -> bool:
    return name.startswith("timm:") or name in VIT_CONFIGS


def _safetensors_why_not(spec: dict[str, Any]) -> str | None:
    return None  # every backbone has a state dict


def _torchvision_why_not(spec: dict[str, Any]) -> str | None:
    if spec["name"] in TORCHVISION_RESNETS:
        return None
    if _is_timm_model(spec["name"]):
        return "'torchvision' is only for the torchvision ResNet backbones; a timm model exports to 'timm'"
    return f"'torchvision' needs a torchvision model; '{spec['name']}' is a selfsup network"


def _timm_why_not(spec: dict[str, Any]) -> str | None:
    name = spec["name"]
    if spec.get("channelwise"):
        return ("a channel-wise ViT (one shared single-band patch projection plus band embeddings) has no timm "
                "counterpart; use 'safetensors' (selfsup.load_backbone rebuilds it)")
    if _is_timm_model(name) or (name in TORCHVISION_RESNETS and not spec.get("cifar_stem")):
        return None
    if name in TORCHVISION_RESNETS:
        return ("timm's ResNet has no 3x3 stride-1 stem without max-pool, so the CIFAR-stem weights have no "
                "timm model to load into; use 'torchvision' (its JSON gives the two stem changes)")
    return f"'timm' needs a timm or torchvision model; '{name}' is a selfsup network"


def spatial_dims(spec: dict[str, Any]) -> int:
    """3 for an encoder of volumes (its registered factory says ``field_kind``), else 2."""
    factory = BACKBONES.get(spec["name"]) if spec["name"] in BACKBONES.names() else None
    return 3 if getattr(factory, "field_kind", None) == VOLUME.name else 2


def preprocess_text(spec: dict[str, Any], image_size: int) -> str:
    """How pixels become the backbone's input, in words: the evaluation transform of
    :class:`selfsup.views.Preprocess`, with the normalisation saved beside the weights."""
    s = int(image_size)
    unit = ("scale to [0, 1] (8-bit data / 255; raw domain data through the run's pixel window, "
            "RUN/data_stats.json)")
    if spatial_dims(spec) == 3:
        return f"{unit}, resize the whole volume trilinearly to {s} x {s} x {s} (no crop), then (x - mean) / std"
    return (f"resize the shorter side to {s} (bilinear, antialiased), centre-crop to {s} x {s}, {unit}, then "
            "(x - mean) / std")


def supported_formats(spec: dict[str, Any]) -> list[str]:
    """The export formats that work for a backbone with this ``spec``."""
    return [name for name, fmt in EXPORT_FORMATS.items() if fmt.why_not(spec) is None]


def inner_state_dict(state: dict[str, torch.Tensor], spec: dict[str, Any], src: Path) -> dict[str, torch.Tensor]:
    """The state dict of the backbone's inner ``.model`` (what timm / torchvision load) from its own keys."""
    if any(not k.startswith(INNER_PREFIX) for k in state):
        raise ValueError(f"{src}: unexpected state-dict keys for a '{spec['name']}' backbone "
                         f"(expected all under '{INNER_PREFIX}')")
    return {k[len(INNER_PREFIX):]: v for k, v in state.items()}


def load_strictly(model: nn.Module, state: dict[str, torch.Tensor], spec: dict[str, Any], fmt: str) -> nn.Module:
    """``model`` with ``state`` loaded ``strict=True``; a mismatch (a bug or an unusual spec) fails the export."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # never write a file that does not load
        raise RuntimeError(f"export of '{spec['name']}' to {fmt!r} failed its strict-load check: {e}") from e
    return model


# ------------------------------------------------------------------------------------------ targets
def timm_create_args(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``timm.create_model`` arguments that build the architecture of a backbone that exports to
    ``timm`` (``model_name``, ``pretrained=False``, ``num_classes=0``, ``in_chans`` and the model's own)."""
    name = spec["name"]
    if name.startswith("timm:"):
        model_name, kwargs = name[len("timm:"):], {k: v for k, v in spec.items() if k not in ("name", "in_channels")}
    elif name in VIT_CONFIGS:
        model_name, kwargs = registered_vit_timm_args(spec)
    else:  # a torchvision ResNet with the standard stem: timm's model of the same name has the same keys
        model_name, kwargs = name, {}
    return {"model_name": model_name, "pretrained": False, "num_classes": 0,
            "in_chans": int(spec.get("in_channels", 3)), **kwargs}


def _timm_target(spec: dict[str, Any], weights_name: str) -> tuple[Callable[[], nn.Module], dict, str]:
    call = timm_create_args(spec)
    model_name = call["model_name"]

    def build() -> nn.Module:
        import timm
        return timm.create_model(**call)

    args = ", ".join([repr(model_name)] + [f"{k}={v!r}" for k, v in call.items() if k != "model_name"])
    code = (
        f"# {weights_name} is relative to the folder of this JSON\n"
        "import timm\n"
        "from safetensors.torch import load_file\n\n"
        f"model = timm.create_model({args})\n"
        f"model.load_state_dict(load_file({weights_name!r}), strict=True)\n"
        "model.eval()\n"
    )
    return build, {"create_model": call}, code


def _torchvision_target(spec: dict[str, Any], weights_name: str) -> tuple[Callable[[], nn.Module], dict, str]:
    arch, channels, cifar = spec["name"], int(spec.get("in_channels", 3)), bool(spec.get("cifar_stem", False))
    changes = replacement_code(channels, cifar)

    def build() -> nn.Module:
        import torchvision
        return apply_replacements(getattr(torchvision.models, arch)(weights=None), channels, cifar)

    code = (
        f"# {weights_name} is relative to the folder of this JSON\n"
        "import torch.nn as nn\n"
        "import torchvision\n"
        "from safetensors.torch import load_file\n\n"
        f"model = torchvision.models.{arch}(weights=None)\n"
        + "".join(f"model.{attr} = {expr}\n" for attr, expr in changes.items())
        + f"model.load_state_dict(load_file({weights_name!r}), strict=True)\n"
        "model.eval()\n"
    )
    info = {"torchvision": {"arch": arch, "weights": None, "in_channels": channels, "cifar_stem": cifar,
                            "replace_modules": changes}}
    return build, info, code


# ------------------------------------------------------------------------------------------- export
def _resolve_out(out: str | os.PathLike | None, run_dir: Path, fmt: str, suffix: str) -> Path:
    default_name = f"backbone-{fmt}{suffix}"
    if out is None:
        return run_dir / "export" / default_name
    out = Path(out)
    if not suffix or out.suffix == suffix:  # a folder format's out is the folder itself
        return out
    if out.is_dir() or out.suffix == "":
        return out / default_name
    raise ValueError(f"out={out} should be a {suffix} file or a directory")


def export_backbone(path: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None) -> Path:
    """Export the backbone saved at ``path`` (anything :func:`load_backbone` takes) to ``fmt``.

    Writes ``out`` (default ``<run_dir>/export/backbone-<fmt>.safetensors``, ``.onnx`` for ONNX, the folder
    ``backbone-hf`` for ``hf``; a directory gets that name) and, beside a file, a JSON with the same stem
    describing how to load it. Returns the weights path (the folder for ``hf``).
    """
    export_format = EXPORT_FORMATS.get(fmt)
    state, meta, src = read_backbone(path)
    spec = meta["spec"]
    why = export_format.why_not(spec)
    if why is not None:
        raise ValueError(f"cannot export backbone '{spec['name']}' to {fmt!r}: {why}. Formats that work for "
                         f"this backbone: {', '.join(supported_formats(spec))}")
    out = _resolve_out(out, src.parent, fmt, export_format.suffix)
    if out.exists() and out.resolve() == src.resolve():
        raise ValueError(f"export target {out} is the source file itself; choose another out")

    info: dict[str, Any] = {**meta, "format": fmt, "weights": out.name, "exported_from": str(src.resolve())}
    info.pop("state_dict_prefix", None)
    if export_format.write is not None:
        export_format.write(state, info, out)
        return out
    if export_format.target is None:
        if meta.get("state_dict_prefix"):  # source is itself a timm/torchvision export: rewrite with full keys
            save_safetensors_atomic(state, out, metadata={"format": "pt"})
        else:
            copy_file_atomic(src, out)
        info["code"] = ("from selfsup.export import load_backbone\n\n"
                        f"model = load_backbone({out.name!r})  # rebuilt from the spec in {out.stem}.json\n")
    else:
        inner = inner_state_dict(state, spec, src)
        build, details, code = export_format.target(spec, out.name)
        load_strictly(build(), inner, spec, fmt)  # the model is dropped: only the check matters
        info.update(details)
        info["code"] = code
        info["state_dict_prefix"] = INNER_PREFIX  # lets selfsup's load_backbone read this file back
        save_safetensors_atomic(inner, out, metadata={"format": "pt"})
    write_json_atomic(out.with_suffix(".json"), info)
    return out


EXPORT_FORMATS.add("safetensors", ExportFormat(_safetensors_why_not))
EXPORT_FORMATS.add("torchvision", ExportFormat(_torchvision_why_not, _torchvision_target))
EXPORT_FORMATS.add("timm", ExportFormat(_timm_why_not, _timm_target))

__all__ = ["EXPORT_FORMATS", "INNER_PREFIX", "ExportFormat", "Writer", "export_backbone", "inner_state_dict",
           "load_strictly", "preprocess_text", "spatial_dims", "supported_formats", "timm_create_args"]
