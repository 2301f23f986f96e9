"""How the tensors of a public weights file map onto a backbone's own keys (no file reading here: see
:mod:`selfsup.backbones.weights`).

A file's tensors are first flattened: nested dicts (checkpoint wrappers such as ``state_dict``, ``model``,
``teacher``, ``student``, an optimizer's state) become dotted keys, ``teacher.backbone.blocks.0.norm1.weight``.
A :class:`Layout` is then one reading of those keys:

- a **prefix** below which the backbone's tensors sit (``""``, ``module.`` of DDP, ``backbone.``,
  ``teacher.backbone.`` of a DINO / DINOv2 training checkpoint, ``visual.`` or ``visual.trunk.`` of an open_clip
  model); the keys outside it are ignored;
- a **naming**: the backbone's own keys (a saved selfsup backbone) or those of its inner ``.model`` (a plain
  timm, torchvision or open_clip state dict);
- a **conversion** of public names to timm's: DINOv2's (Oquab et al., "DINOv2: Learning Robust Visual Features
  without Supervision", 2023: the ``mask_token`` used only in training, chunked blocks, SwiGLU ``w12``/``w3``,
  ``register_tokens``) and OpenAI CLIP's ViT as open_clip names it (Radford et al., ICML 2021: ``conv1``,
  ``class_embedding``, ``transformer.resblocks.N``).

Every prefix, naming and conversion is tried; the reading that covers most of the backbone's tensors wins
(ties: more tensors of the right shape, a ``teacher`` (DINO evaluates its teacher), a conversion that applied,
the shortest prefix, the file's order). :func:`fit_vit_positions` then brings a ViT's position embedding of
another grid (or with a class-token position where the backbone adds none) to the backbone's.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

FlatState = dict[str, torch.Tensor]
PREFIX_DEPTH = 4  # model.teacher.backbone. of a DINOv2 training checkpoint is 3 levels deep
# A tensor is renamed to another key (and reshaped), or dropped (None).
Rename = Callable[[str, torch.Tensor], "tuple[str, torch.Tensor] | None"]


def flatten_tensors(obj: Any) -> FlatState:
    """Every tensor reachable through nested dicts of ``obj``, under its dotted path; lists and other objects
    (epochs, optimizer hyper-parameters) are skipped."""
    flat: FlatState = {}

    def visit(value: Any, path: str) -> None:
        if isinstance(value, torch.Tensor):
            flat[path] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f"{path}.{key}" if path else str(key))

    visit(obj, "")
    flat.pop("", None)  # a bare tensor is no state dict
    return flat


def key_prefixes(keys: Iterable[str]) -> list[str]:
    """``""`` and every dotted prefix of ``keys`` (up to :data:`PREFIX_DEPTH` names, none of them a block
    index) in the order they first appear."""
    prefixes = {"": None}
    for key in keys:
        parts = key.split(".")
        for n in range(1, min(PREFIX_DEPTH, len(parts) - 1) + 1):
            if parts[n - 1].isdigit():
                break
            prefixes[".".join(parts[:n]) + "."] = None
    return list(prefixes)


# ------------------------------------------------------------------------------------------ conversions
_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")  # DINOv2's block chunks: blocks.<chunk>.<block>.


def _dinov2_to_timm(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    if key == "mask_token":  # iBOT's mask token, used in DINOv2's training only
        return None
    key = _CHUNKED_BLOCK.sub(r"blocks.\1.", key)
    key = key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")  # timm's packed SwiGLU
    return ("reg_token" if key == "register_tokens" else key), value


def _is_dinov2(state: FlatState) -> bool:
    return (("mask_token" in state and "blocks.0.norm1.weight" in state) or "register_tokens" in state
            or ("pos_embed" in state and any(_CHUNKED_BLOCK.match(k) for k in state)))


_CLIP_NAMES = [(re.compile(pattern), name) for pattern, name in (
    (r"^conv1\.", "patch_embed.proj."), (r"^ln_pre\.", "norm_pre."), (r"^ln_post\.", "norm."),
    (r"^transformer\.resblocks\.(\d+)\.ln_1\.", r"blocks.\1.norm1."),
    (r"^transformer\.resblocks\.(\d+)\.ln_2\.", r"blocks.\1.norm2."),
    (r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2"),
    (r"^transformer\.resblocks\.(\d+)\.attn\.out_proj\.", r"blocks.\1.attn.proj."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"blocks.\1.mlp.fc1."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"blocks.\1.mlp.fc2."),
    (r"^transformer\.resblocks\.(\d+)\.ls_(\d)\.gamma$", r"blocks.\1.ls\2.gamma"),
)]


def _clip_vit_to_timm(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    if key == "class_embedding":
        return "cls_token", value.reshape(1, 1, -1)
    if key == "positional_embedding":
        return "pos_embed", value.unsqueeze(0)
    if key == "proj":  # the projection into the joint image-text space: a backbone has no head
        return None
    for pattern, name in _CLIP_NAMES:
        if pattern.search(key):
            return pattern.sub(name, key), value
    return key, value


def _is_clip_vit(state: FlatState) -> bool:
    return "class_embedding" in state and "transformer.resblocks.0.attn.in_proj_weight" in state


# (name for the report, applies to these tensors?, rename)
CONVERSIONS: list[tuple[str, Callable[[FlatState], bool], Rename]] = [
    ("DINOv2 ViT", _is_dinov2, _dinov2_to_timm),
    ("OpenAI CLIP / open_clip ViT", _is_clip_vit, _clip_vit_to_timm),
]


# ----------------------------------------------------------------------------------------------- layouts
@dataclass
class Layout:
    """One reading of a file: backbone key -> (file key, tensor)."""

    prefix: str
    naming: str  # "" (the backbone's own keys) or "model." (its inner model's)
    conversion: str | None
    tensors: dict[str, tuple[str, torch.Tensor]] = field(default_factory=dict)

    def state(self) -> FlatState:
        return {key: tensor for key, (_, tensor) in self.tensors.items()}

    def sources(self, keys: Iterable[str]) -> set[str]:
        """The file keys read for these backbone keys."""
        return {self.tensors[key][0] for key in keys if key in self.tensors}

    def describe(self, library: str | None) -> str:
        if self.conversion:
            what = f"a {self.conversion} state dict, renamed to {library or 'timm'}'s names"
        elif self.naming:
            what = f"a plain {library} state dict"
        else:
            what = "the backbone's own keys (as selfsup saves them)"
        return what + (f", under '{self.prefix}'" if self.prefix else "")


def inner_library(model: nn.Module) -> str | None:
    """Whose names the backbone's inner ``.model`` has: ``timm``, ``torchvision``, ``open_clip``; None without one."""
    inner = getattr(model, "model", None)
    if not isinstance(inner, nn.Module):
        return None
    if str(getattr(model, "spec", {}).get("name", "")).startswith("open_clip:"):
        return "open_clip"
    return type(inner).__module__.split(".")[0]


def candidate_layouts(model: nn.Module, flat: FlatState) -> list[Layout]:
    """Every reading of ``flat`` (see the module doc) that maps at least one tensor onto ``model``'s keys."""
    own = model.state_dict()
    namings = [""] + (["model."] if inner_library(model) else [])
    layouts = []
    for prefix in key_prefixes(flat):
        below = {key[len(prefix):]: key for key in flat if key.startswith(prefix)}
        sub = {key: flat[source] for key, source in below.items()}
        readings: list[tuple[str | None, dict[str, tuple[str, torch.Tensor]]]] = [
            (None, {key: (below[key], tensor) for key, tensor in sub.items()})]
        for name, applies, rename in CONVERSIONS:
            if applies(sub):
                renamed = {}
                for key, tensor in sub.items():
                    new = rename(key, tensor)
                    if new is not None:
                        renamed[new[0]] = (below[key], new[1])
                readings.append((name, renamed))
        for conversion, tensors in readings:
            for naming in namings:
                layout = Layout(prefix, naming, conversion, {naming + k: v for k, v in tensors.items()})
                if own.keys() & layout.tensors.keys():
                    layouts.append(layout)
    return layouts


def _score(layout: Layout, own: dict[str, Any]) -> tuple:
    present = own.keys() & layout.tensors.keys()
    same_shape = sum(layout.tensors[k][1].shape == own[k].shape for k in present)
    teacher = "teacher" in layout.prefix.split(".")
    return len(present), same_shape, teacher, layout.conversion is not None, -len(layout.prefix)


def best_layout(model: nn.Module, flat: FlatState) -> tuple[Layout | None, list[str]]:
    """The reading of ``flat`` that covers most of ``model`` (ties: see the module doc) and the prefixes of other
    readings that cover as much from other tensors of the file (a student beside the teacher); None if no
    reading maps any tensor."""
    own = model.state_dict()
    layouts = candidate_layouts(model, flat)
    if not layouts:
        return None, []
    scores = [_score(layout, own) for layout in layouts]
    best = max(range(len(layouts)), key=lambda i: scores[i])  # max keeps the first of equals: the file's order
    chosen, used = layouts[best], layouts[best].sources(own)
    others = [layout.prefix or "(top level)" for layout, score in zip(layouts, scores)
              if score[0] == scores[best][0] and not (layout.sources(own) & used)]
    return chosen, list(dict.fromkeys(others))


# ----------------------------------------------------------------------------------- ViT position embeddings
def _prefix_positions(count: int, own_prefix: int) -> int | None:
    """How many of a file's ``count`` positions belong to prefix tokens: the rest must be a square grid."""
    for prefix in dict.fromkeys((own_prefix, 0, 1)):
        grid = count - prefix
        if grid > 0 and math.isqrt(grid) ** 2 == grid:
            return prefix
    return None


def fit_vit_positions(model: nn.Module, state: FlatState) -> list[str]:
    """Bring every ViT ``pos_embed`` of ``state`` whose shape differs from ``model``'s to the model's (in place):
    a class-token position the model does not add is folded into ``cls_token`` (the same sum) or dropped without
    a class token, missing prefix positions become zeros (the same as none), and the patch positions of another
    grid are interpolated (bicubic, timm's ``resample_abs_pos_embed``). Returns what was done, for the log."""
    from timm.layers import resample_abs_pos_embed

    notes, own = [], model.state_dict()
    for key in [k for k in own if k.endswith("pos_embed") and k in state and state[k].shape != own[k].shape]:
        vit, pos, want = model.get_submodule(key[:-len("pos_embed")].rstrip(".")), state[key], own[key]
        if not hasattr(vit, "no_embed_class") or pos.ndim != 3 or pos.shape[-1] != want.shape[-1]:
            continue  # not a timm ViT's, or another width: the shape check reports it
        own_prefix = 0 if vit.no_embed_class else int(vit.num_prefix_tokens)
        file_prefix = _prefix_positions(pos.shape[1], own_prefix)
        if file_prefix is None or file_prefix not in (own_prefix, 0, 1):
            continue
        prefix_pos, patch_pos = pos[:, :file_prefix], pos[:, file_prefix:]
        if file_prefix > own_prefix:  # the file's ViT adds a position to its class token, this one adds none
            cls_key = key[:-len("pos_embed")] + "cls_token"
            if cls_key in state and cls_key in own:
                state[cls_key] = state[cls_key] + prefix_pos
                notes.append(f"folded the class token's position embedding of the file into {cls_key} (this ViT "
                             "adds no position to its prefix tokens; the sum is the same)")
            else:
                notes.append(f"dropped the class-token position of {key} (this ViT has no class token)")
            prefix_pos = pos[:, :0]
        elif file_prefix < own_prefix:
            prefix_pos = torch.zeros(1, own_prefix, pos.shape[-1], dtype=pos.dtype)
            notes.append(f"{key}: the file adds no position to prefix tokens; zeros for them (the same)")
        old = math.isqrt(patch_pos.shape[1])
        grid = tuple(int(g) for g in vit.patch_embed.grid_size)
        if (old, old) != grid:
            patch_pos = resample_abs_pos_embed(patch_pos.float(), new_size=list(grid), old_size=[old, old],
                                               num_prefix_tokens=0).to(pos.dtype)
            notes.append(f"interpolated {key} from a {old}x{old} to a {grid[0]}x{grid[1]} patch grid (bicubic, "
                         "timm's resample_abs_pos_embed)")
        state[key] = torch.cat([prefix_pos, patch_pos], dim=1)
    return notes


__all__ = ["CONVERSIONS", "Layout", "best_layout", "candidate_layouts", "fit_vit_positions", "flatten_tensors",
           "inner_library", "key_prefixes"]
