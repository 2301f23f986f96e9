"""Image-text towers in open_clip's own layout: open_clip weights into selfsup towers, and selfsup towers out as a
model open_clip loads with ``strict=True`` (Ilharco et al., "OpenCLIP", 2021).

- :func:`load_open_clip_towers` ``(arch, weights)``: :class:`~selfsup.backbones.towers.ImageTextTowers` whose
  image tower is the backbone ``open_clip:<arch>`` and text tower the text encoder ``open_clip:<arch>``, with
  identity projections and the model's logit scale (and bias, SigLIP) from ``weights`` (a local open_clip state
  dict: safetensors, or a ``weights_only`` torch file). Every tensor of the file must find its place and every
  place its tensor; the error names those that do not.
- :func:`open_clip_state_dict` ``(towers)``: the towers' state dict under open_clip's keys (``visual.*``,
  ``token_embedding.weight``, ``positional_embedding``, ``transformer.*``, ``ln_final.*``, ``text_projection``,
  ``logit_scale`` ... or ``text.*`` for custom-text models such as SigLIP), for towers of one open_clip
  architecture.
- :func:`export_open_clip` ``(towers, out_dir)``: that state dict as ``open_clip_model.safetensors`` beside an
  ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``), open_clip's own folder layout, so
  ``open_clip.create_model("local-dir:<out_dir>")`` loads it (strictly); checked by a strict load into a fresh
  open_clip model before anything is written.

The export formats of :mod:`selfsup.export.formats` take one saved backbone; two towers are exported here.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from selfsup import __version__
from selfsup.backbones.open_clip_towers import (LOGIT_KEYS, OPEN_CLIP_CONFIG_NAME, VISUAL_PREFIX, OpenClipImageTower,
                                                OpenClipTextTower, create_open_clip_model, read_open_clip_state_dict,
                                                resolve_open_clip_arch, split_open_clip_model)
from selfsup.backbones.towers import ImageTextTowers
from selfsup.export.backbone_io import portable_state_dict, save_safetensors_atomic, unwrap_backbone
from selfsup.files import write_json_atomic

OPEN_CLIP_WEIGHTS_NAME = "open_clip_model.safetensors"  # the file open_clip looks for first in a local-dir
# Where each tower's open_clip modules sit inside ImageTextTowers (each tower's inner ``.model``).
IMAGE_KEY_PREFIX, TEXT_KEY_PREFIX = "image.model.", "text.model."


def _towers_key(open_clip_key: str) -> str:
    if open_clip_key.startswith(VISUAL_PREFIX):
        return IMAGE_KEY_PREFIX + open_clip_key
    return open_clip_key if open_clip_key in LOGIT_KEYS else TEXT_KEY_PREFIX + open_clip_key


def _open_clip_key(towers_key: str) -> str:
    for prefix in (IMAGE_KEY_PREFIX, TEXT_KEY_PREFIX):
        if towers_key.startswith(prefix):
            return towers_key[len(prefix):]
    return towers_key


def load_open_clip_towers(arch: str, weights: str | os.PathLike | None = None, *,
                          preprocess_tag: str | None = None) -> ImageTextTowers:
    """Towers of the open_clip architecture ``arch`` (name, model-config JSON or folder), with ``weights`` loaded
    (None: open_clip's random initialisation), in eval mode. ``preprocess_tag``: see
    :mod:`selfsup.backbones.open_clip_towers`."""
    resolved = resolve_open_clip_arch(arch, preprocess_tag=preprocess_tag)
    visual, text_model, scale, bias = split_open_clip_model(create_open_clip_model(resolved))
    towers = ImageTextTowers(OpenClipImageTower(resolved, visual), OpenClipTextTower(resolved, text_model),
                             resolved.embed_dim, init_logit_scale=float(scale),
                             init_logit_bias=None if bias is None else float(bias))
    if weights is not None:
        state = read_open_clip_state_dict(weights)
        own = towers.state_dict()
        wanted = {_open_clip_key(k) for k in own}
        missing, unexpected = sorted(wanted - state.keys()), sorted(state.keys() - wanted)
        if missing or unexpected:
            parts = [f"{len(v)} {name} (e.g. {', '.join(v[:4])})" for name, v in
                     (("missing", missing), ("unexpected", unexpected)) if v]
            raise ValueError(f"{weights} does not fit open_clip '{arch}': {'; '.join(parts)} tensor name(s); are "
                             "these the weights of another architecture?")
        # open_clip keeps the logit scale as a () or a (1,) tensor depending on the architecture; ours is ().
        towers_state = {_towers_key(k): v.reshape(own[_towers_key(k)].shape) if k in LOGIT_KEYS else v
                        for k, v in state.items()}
        try:
            towers.load_state_dict(towers_state, strict=True)
        except RuntimeError as error:  # shapes differ
            raise ValueError(f"{weights} does not fit open_clip '{arch}': {error}") from None
    return towers.eval()


def _open_clip_towers(towers: nn.Module) -> tuple[OpenClipImageTower, OpenClipTextTower]:
    """The two open_clip towers of ``towers``, or a ValueError saying which towers export in open_clip's layout."""
    image, text = getattr(towers, "image", None), getattr(towers, "text", None)
    if not isinstance(image, OpenClipImageTower) or not isinstance(text, OpenClipTextTower):
        names = [getattr(t, "spec", {}).get("name", type(t).__name__) for t in (image, text)]
        raise ValueError(f"towers with image tower '{names[0]}' and text tower '{names[1]}' have no open_clip "
                         "layout: only towers whose image tower is the backbone open_clip:<arch> and text tower the "
                         "text encoder open_clip:<arch> of the same architecture export to open_clip (e.g. those of "
                         "load_open_clip_towers); save other towers with selfsup.export.towers_io")
    if image.open_clip_arch.model_cfg != text.open_clip_arch.model_cfg:
        raise ValueError(f"the image tower ({image.spec['name']}) and the text tower ({text.spec['name']}) are of two "
                         "open_clip architectures; one open_clip model holds towers of one")
    if not isinstance(towers.image_projection, nn.Identity) or not isinstance(towers.text_projection, nn.Identity):
        raise ValueError("these towers add projections of their own, which open_clip's model has no place for")
    return image, text


def open_clip_state_dict(towers: ImageTextTowers) -> dict[str, torch.Tensor]:
    """``towers``' tensors under open_clip's keys (fp32, CPU, contiguous): loads into ``open_clip.create_model(arch)``
    with ``strict=True``. Raises ValueError for towers that are not two towers of one open_clip architecture."""
    towers = unwrap_backbone(towers)
    image, _ = _open_clip_towers(towers)
    model_cfg = image.open_clip_arch.model_cfg
    if (towers.logit_bias is not None) != (model_cfg.get("init_logit_bias") is not None):
        raise ValueError(f"open_clip '{image.open_clip_arch.name}' {'has' if towers.logit_bias is None else 'has no'} "
                         "logit bias but these towers have " + ("none" if towers.logit_bias is None else "one"))
    logit_shape = (1,) if model_cfg.get("nonscalar_logit_scale") else ()
    state = {}
    for key, value in portable_state_dict(towers).items():
        state[_open_clip_key(key)] = value.reshape(logit_shape) if key in LOGIT_KEYS else value
    return state


def export_open_clip(towers: ImageTextTowers, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/open_clip_model.safetensors`` and ``out_dir/open_clip_config.json`` (open_clip's local-dir
    layout, plus a ``selfsup`` entry with loading code); returns the weights path."""
    state = open_clip_state_dict(towers)
    arch = _open_clip_towers(unwrap_backbone(towers))[0].open_clip_arch
    model = create_open_clip_model(arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:  # a bug or an unusual architecture: never write a file that does not load
        raise RuntimeError(f"export of open_clip '{arch.name}' failed its strict-load check: {error}") from error
    del model
    out_dir = Path(out_dir)
    if out_dir.suffix:
        raise ValueError(f"out_dir={out_dir} should be a directory: the export is open_clip's folder layout "
                         f"({OPEN_CLIP_WEIGHTS_NAME} + {OPEN_CLIP_CONFIG_NAME})")
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = save_safetensors_atomic(state, out_dir / OPEN_CLIP_WEIGHTS_NAME, metadata={"format": "pt"})
    code = (f"# run in the folder holding {OPEN_CLIP_CONFIG_NAME}; open_clip reads its config and the weights\n"
            "import open_clip\n\n"
            "model = open_clip.create_model('local-dir:.')\n"
            "model.eval()\n")
    write_json_atomic(out_dir / OPEN_CLIP_CONFIG_NAME, {
        "model_cfg": arch.model_cfg, "preprocess_cfg": arch.preprocess_cfg,
        "selfsup": {"format": "open_clip", "arch": arch.name, "weights": weights.name, "code": code,
                    "selfsup_version": str(__version__)}})
    return weights


__all__ = ["OPEN_CLIP_WEIGHTS_NAME", "export_open_clip", "load_open_clip_towers", "open_clip_state_dict"]
