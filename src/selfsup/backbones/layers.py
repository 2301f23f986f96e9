"""The layer of each backbone parameter, input to output, for layer-wise learning-rate decay (Bao et al., "BEiT:
BERT Pre-Training of Image Transformers", ICLR 2022; Clark et al., "ELECTRA", ICLR 2020).

- A ViT (a module holding ``blocks`` and ``patch_embed``, timm's or selfsup's 3-D one): the stem (patch
  embedding, position embedding, class / register tokens, ``norm_pre``) is layer 0, block ``i`` is layer
  ``i + 1``, everything after the blocks (final norm, head) is layer ``depth + 1``.
- A convolutional network with numbered stages (selfsup's ``stages.N``, torchvision's ``layerN``, timm's
  ``stages.N`` / ``layers.N``): the stem is layer 0, stage ``k`` (counted from 1) is layer ``k``, what follows
  the last stage is the top layer.
- Anything else has no layer sequence: every parameter is layer 0 of 0 and layer decay does not apply.
"""
from __future__ import annotations

import re

import torch.nn as nn

# Stem parameters of a timm ViT (relative to the module holding ``blocks``); ``norm_pre`` runs before the
# blocks, so it belongs to the stem rather than to the final norm.
VIT_STEM = ("cls_token", "reg_token", "dist_token", "pos_embed", "patch_embed", "norm_pre")
_STAGE = re.compile(r"(?:^|\.)(?:(?:stages|layers)\.(\d+)|layer(\d+))\.")


def vit_trunk(backbone: nn.Module) -> tuple[str, int] | None:
    """(name prefix, depth) of the submodule holding a ViT's ``blocks`` and ``patch_embed``; None if none."""
    for name, module in backbone.named_modules():
        blocks = getattr(module, "blocks", None)
        if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and hasattr(module, "patch_embed"):
            return (name + "." if name else ""), len(blocks)
    return None


def vit_layer_id(name: str, depth: int) -> int:
    """Layer of a ViT parameter named relative to the module holding ``blocks``: 0 for the stem, ``i + 1``
    for ``blocks.i``, ``depth + 1`` for everything after the blocks (final norm, head)."""
    if name.split(".", 1)[0] in VIT_STEM:
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def _stage_of(name: str) -> int | None:
    """The stage number of a convolutional parameter counted from 1, or None outside the stages."""
    match = _STAGE.search(name)
    if match is None:
        return None
    return int(match.group(1)) + 1 if match.group(1) is not None else int(match.group(2))


def backbone_layers(backbone: nn.Module) -> tuple[dict[str, int], int]:
    """({parameter name: layer}, top layer) of ``backbone`` (the rules in the module docstring); the top is
    where heads belong."""
    names = [name for name, _ in backbone.named_parameters()]
    trunk = vit_trunk(backbone)
    if trunk is not None:
        prefix, depth = trunk
        return {n: vit_layer_id(n[len(prefix):], depth) if n.startswith(prefix) else depth + 1 for n in names}, \
            depth + 1
    stages = {n: _stage_of(n) for n in names}
    if not any(stage is not None for stage in stages.values()):
        return {n: 0 for n in names}, 0
    top = max(s for s in stages.values() if s is not None) + 1
    layers, seen_stage = {}, False
    for name in names:  # registration order: the stem comes before the first stage, the pooling/head after
        stage = stages[name]
        seen_stage = seen_stage or stage is not None
        layers[name] = stage if stage is not None else (top if seen_stage else 0)
    return layers, top
