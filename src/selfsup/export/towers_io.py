"""Save and load an image-text model's two towers as ``towers.safetensors`` + ``towers.json``, beside the image
tower's own ``backbone.safetensors`` (which is exported and evaluated like any backbone's).

The weights file holds :class:`~selfsup.backbones.towers.ImageTextTowers`' state dict (image tower, text tower,
their projections, the logit scale and bias); the JSON holds its ``spec`` (from which
:func:`~selfsup.backbones.towers.towers_from_spec` rebuilds the architecture), the image size and normalization
the image tower was trained with, and the text context length. Zero-shot evaluation and image-text retrieval
read them (:mod:`selfsup.eval.protocols.zero_shot`). Written atomically, like the backbone.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from safetensors import safe_open
from safetensors.torch import load_file

from selfsup import __version__
from selfsup.backbones.towers import ImageTextTowers, towers_from_spec
from selfsup.export.backbone_io import portable_state_dict, save_safetensors_atomic, unwrap_backbone
from selfsup.files import write_json_atomic

TOWERS_WEIGHTS = "towers.safetensors"
TOWERS_META = "towers.json"


def save_towers(towers: ImageTextTowers, out_dir: str | Path, *, image_size: int, mean: Sequence[float],
                std: Sequence[float], extra: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/towers.safetensors`` and ``out_dir/towers.json``; returns the weights path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    towers = unwrap_backbone(towers)
    meta = {**(extra or {}), "spec": towers.spec, "image_size": int(image_size),
            "normalization": {"mean": [float(m) for m in mean], "std": [float(s) for s in std]},
            "context_length": towers.context_length, "selfsup_version": __version__, "format": "selfsup-towers"}
    path = save_safetensors_atomic(portable_state_dict(towers), out_dir / TOWERS_WEIGHTS,
                                   metadata={"selfsup": json.dumps(meta)})
    write_json_atomic(out_dir / TOWERS_META, meta)
    return path


def has_towers(path: str | Path) -> bool:
    """Whether ``path`` (a run directory) holds saved towers."""
    return (Path(path) / TOWERS_WEIGHTS).is_file()


def load_towers(path: str | Path) -> ImageTextTowers:
    """The towers saved in ``path`` (a run directory or the towers.safetensors file), in eval mode, with their
    metadata as ``.meta``."""
    path = Path(path)
    weights = path / TOWERS_WEIGHTS if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} does not exist: towers are saved by the image-text methods (clip, "
                                "siglip, convirt, slip)")
    meta_path = weights.with_name(TOWERS_META)
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if meta is None:  # the JSON was lost: the header holds the same record
        with safe_open(str(weights), "pt") as f:
            meta = json.loads(f.metadata()["selfsup"])
    towers = towers_from_spec(meta["spec"])
    towers.load_state_dict(load_file(str(weights), device="cpu"), strict=True)
    towers.eval()
    towers.meta = meta
    return towers
