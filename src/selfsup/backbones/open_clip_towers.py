"""open_clip models as selfsup towers: ``open_clip:<arch>`` as a backbone (the image tower) and as a text encoder.

open_clip (Ilharco et al., "OpenCLIP", 2021) implements CLIP (Radford et al., "Learning Transferable Visual
Models From Natural Language Supervision", ICML 2021), SigLIP (Zhai et al., "Sigmoid Loss for Language Image
Pre-Training", ICCV 2023) and their relatives. ``<arch>`` is one of ``open_clip.list_models()`` (``ViT-B-32``,
``RN50``, ``ViT-B-16-SigLIP`` ...), or a local model-config JSON file (``{"embed_dim", "vision_cfg",
"text_cfg"}``, or the ``{"model_cfg", "preprocess_cfg"}`` of an ``open_clip_config.json``), or a folder holding
an ``open_clip_config.json``. The image tower computes ``model.encode_image(x, normalize=False)``
(``model.visual(x)``), the text tower ``model.encode_text(tokens, normalize=False)``; both carry ``projected =
True`` and ``num_features = embed_dim``, so :class:`~selfsup.backbones.towers.ImageTextTowers` adds no
projection and a loaded model computes what open_clip computes.

Each tower's inner ``.model`` holds open_clip's own modules under open_clip's own names, so its state dict is
open_clip's, restricted to that tower: the image tower's ``.model.visual`` is open_clip's ``visual``; the text
tower's ``.model`` is the open_clip model itself with its image tower and logit scale/bias taken out (its
``encode_text`` is open_clip's code). A full open_clip state dict therefore loads into either tower (option
``weights``: a local safetensors file, or a torch file read with ``weights_only=True``; nothing is ever
downloaded), into ``selfsup eval --backbone open_clip:<arch> --weights FILE`` (eval matches the inner
``.model``'s keys and ignores the text tower's), and :mod:`selfsup.export.open_clip` maps two towers to and
from it.

The image tower's preprocessing is ``preprocess_cfg`` (open_clip's dict: size, mean, std, interpolation,
resize_mode) and, in timm's form, ``.model.pretrained_cfg`` (``input_size``, ``mean``, ``std``), where
evaluation reads a wrapped model's input size and normalisation (as for ``timm:`` backbones). The size is the
model's; mean and std are those every open_clip pretrained tag of the architecture shares (open_clip's static
table, nothing downloaded), else open_clip's defaults (OpenAI's statistics); ``preprocess_tag`` picks one
tag's values where tags differ (ViT-L-14: 0.5 for ``laion2b_s32b_b82k``, OpenAI's for the others). The text
tower's ``tokenizer_name`` is None when open_clip tokenizes its text with CLIP's BPE, as
:func:`selfsup.views.text.tokenize` does, else the tokenizer open_clip uses (SigLIP's, a Hugging Face one),
which selfsup does not provide.

Building constructs the whole open_clip model (its public classes) and keeps one tower; a model loaded with
:func:`selfsup.export.open_clip.load_open_clip_towers` is built once for both. Not supported: CoCa (its text
decoder has no place in two towers) and Hugging Face text towers (they need ``transformers`` and the hub).
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file

from selfsup.config import ConfigError
from selfsup.registry import did_you_mean
from selfsup.views.text import require_text_extra

OPEN_CLIP_PREFIX = "open_clip:"
OPEN_CLIP_CONFIG_NAME = "open_clip_config.json"  # open_clip's name for a model's config (hub / local-dir layout)
LOGIT_KEYS = ("logit_scale", "logit_bias")
VISUAL_PREFIX = "visual."


@dataclasses.dataclass(frozen=True)
class OpenClipArch:
    """An open_clip architecture: ``name`` as given after ``open_clip:``, its ``model_cfg`` and ``preprocess_cfg``
    (open_clip's dicts); ``from_file``: the config came from a file, so specs carry it (a saved model then
    rebuilds without that file)."""

    name: str
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    from_file: bool
    preprocess_tag: str | None = None

    @property
    def embed_dim(self) -> int:
        return int(self.model_cfg["embed_dim"])

    @property
    def tokenizer_name(self) -> str | None:
        """None when open_clip tokenizes this architecture's text with CLIP's BPE (as
        :func:`selfsup.views.text.tokenize` does), else the tokenizer it uses (``open_clip.get_tokenizer``'s rule:
        the config's Hugging Face tokenizer, else SigLIP's for a name holding 'siglip')."""
        hf_name = self.model_cfg["text_cfg"].get("hf_tokenizer_name")
        if hf_name:
            return hf_name
        return "siglip" if not self.from_file and "siglip" in self.name.lower() else None

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.preprocess_cfg["size"]
        return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))

    def spec_options(self, image: bool) -> dict[str, Any]:
        """What a tower's ``spec`` needs besides its name to rebuild this architecture."""
        options: dict[str, Any] = {"model_cfg": self.model_cfg} if self.from_file else {}
        if image and self.from_file:
            options["preprocess_cfg"] = self.preprocess_cfg
        if image and self.preprocess_tag is not None:
            options["preprocess_tag"] = self.preprocess_tag
        return options


# ------------------------------------------------------------------------------------------- architecture
def _read_config_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    if path.is_dir():
        path = path / OPEN_CLIP_CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"open_clip model config {path} does not exist")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"open_clip model config {path} is not valid JSON ({error})") from None
    model_cfg, preprocess_cfg = config.get("model_cfg", config), config.get("preprocess_cfg", {})
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_cfg]
    if missing:
        raise ConfigError(f"{path} is not an open_clip model config: it lacks {missing}")
    return model_cfg, preprocess_cfg


def _shared_tag_preprocess(open_clip, arch: str, tag: str | None) -> dict[str, Any]:
    """The preprocessing of open_clip's pretrained ``tag`` of ``arch``, or (no tag) the values all its tags share."""
    keys = ("mean", "std", "interpolation", "resize_mode")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag is not None:
        if tag not in tags:
            raise ConfigError(f"open_clip has no pretrained tag '{tag}' for {arch}.{did_you_mean(tag, tags)} "
                              f"Tags: {', '.join(tags) or '(none)'}")
        tags = [tag]
    cfgs = [open_clip.get_pretrained_cfg(arch, t) for t in tags]
    shared = {}
    for key in keys:
        values = {json.dumps(c[key]) for c in cfgs if key in c}
        if len(values) == 1 and all(key in c for c in cfgs):
            shared[key] = json.loads(values.pop())
    return shared


def _check_supported(arch: str, model_cfg: dict[str, Any]) -> None:
    if "multimodal_cfg" in model_cfg:
        raise ConfigError(f"open_clip '{arch}' is a CoCa model: its text decoder has no place in two towers; "
                          "use a CLIP or SigLIP architecture")
    if model_cfg.get("text_cfg", {}).get("hf_model_name"):
        raise ConfigError(f"open_clip '{arch}' has a Hugging Face text tower, which needs transformers and the "
                          "hub; selfsup builds open_clip's own text transformers only")


def resolve_open_clip_arch(arch: str, *, model_cfg: dict[str, Any] | None = None,
                           preprocess_cfg: dict[str, Any] | None = None,
                           preprocess_tag: str | None = None) -> OpenClipArch:
    """``arch`` (a name of ``open_clip.list_models()``, a model-config JSON file or a folder with an
    ``open_clip_config.json``) as an :class:`OpenClipArch`; ``model_cfg`` given wins over ``arch``'s."""
    open_clip = require_text_extra()
    if arch.startswith(("hf-hub:", "local-dir:")):
        raise ConfigError(f"open_clip:{arch}: selfsup never downloads and takes no open_clip schemas; give an "
                          "architecture name (open_clip.list_models()) or a local model-config JSON file")
    from_file = model_cfg is not None or arch.endswith(".json") or Path(arch).exists()
    file_preprocess: dict[str, Any] = {}
    if model_cfg is not None:
        model_cfg = copy.deepcopy(model_cfg)
    elif from_file:
        model_cfg, file_preprocess = _read_config_file(Path(arch))
    else:
        model_cfg = open_clip.get_model_config(arch)
        if model_cfg is None:
            raise ConfigError(f"unknown open_clip architecture '{arch}'."
                              f"{did_you_mean(arch, open_clip.list_models())} Give one of open_clip.list_models() "
                              "or the path of an open_clip model-config JSON file")
    _check_supported(arch, model_cfg)
    if preprocess_tag is not None and from_file:
        raise ConfigError("preprocess_tag names a pretrained tag of a named open_clip architecture; an "
                          "architecture from a file takes preprocess_cfg instead")
    preprocess = dataclasses.asdict(open_clip.transform.PreprocessCfg())
    if not from_file:
        preprocess.update(_shared_tag_preprocess(open_clip, arch, preprocess_tag))
    preprocess.update(file_preprocess)
    preprocess.update(copy.deepcopy(preprocess_cfg or {}))
    # open_clip sizes preprocessing by the model's image size, whatever a tag or a file says.
    size = model_cfg["vision_cfg"].get("image_size", open_clip.CLIPVisionCfg().image_size)
    preprocess["size"] = list(size) if isinstance(size, (list, tuple)) else int(size)
    for key in ("mean", "std"):
        preprocess[key] = [float(v) for v in preprocess[key]]
    return OpenClipArch(arch, model_cfg, preprocess, from_file, preprocess_tag)


def create_open_clip_model(arch: OpenClipArch) -> nn.Module:
    """A randomly initialised open_clip model of ``arch`` (``CLIP`` or ``CustomTextCLIP``, as
    ``open_clip.create_model(name, pretrained=None)`` builds it, without looking anything up)."""
    open_clip = require_text_extra()
    cfg = copy.deepcopy(arch.model_cfg)
    custom_text = cfg.pop("custom_text", False)
    cfg["vision_cfg"] = {**cfg["vision_cfg"], "timm_model_pretrained": False}  # timm image towers: no download
    return (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**cfg)


def split_open_clip_model(model: nn.Module) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor | None]:
    """``(visual, text model, logit_scale, logit_bias or None)`` of an open_clip model. The text model is
    ``model`` itself with ``visual`` and the logit parameters taken out: what ``encode_text`` reads is left."""
    visual, scale = model.visual, model.logit_scale.detach().clone()
    bias = None if model.logit_bias is None else model.logit_bias.detach().clone()
    model.visual = None
    for name in LOGIT_KEYS:
        if isinstance(getattr(model, name, None), nn.Parameter):
            delattr(model, name)
    return visual, model, scale, bias


# ------------------------------------------------------------------------------------------------ weights
def read_open_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The open_clip state dict in a local file: safetensors, or a torch file read with ``weights_only=True``
    (a bare state dict or open_clip's training checkpoint ``{"state_dict": ...}``, DDP's ``module.`` removed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist (open_clip weights are read from local files "
                                "only; nothing is downloaded)")
    if path.suffix == ".safetensors":
        state: Any = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickles of arbitrary objects are refused by weights_only, on purpose
            raise ValueError(f"{path} could not be read as a weights_only torch file: {error}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold an open_clip state dict of tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def image_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image tower's tensors (``visual.*``) of a full open_clip state dict; a state dict of ``visual`` alone
    (open_clip's ``pretrained_image_path`` layout) gets the prefix."""
    if any(k.startswith(VISUAL_PREFIX) for k in state):
        return {k: v for k, v in state.items() if k.startswith(VISUAL_PREFIX)}
    return {VISUAL_PREFIX + k: v for k, v in state.items()}


def text_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text tower's tensors of a full open_clip state dict: all but ``visual.*`` and the logit scale/bias."""
    return {k: v for k, v in state.items() if not k.startswith(VISUAL_PREFIX) and k not in LOGIT_KEYS}


def load_exactly(module: nn.Module, state: dict[str, torch.Tensor], what: str, source: Any) -> None:
    """Load ``state`` into ``module`` with every key accounted for, naming the missing and unexpected ones."""
    own = module.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    if missing or unexpected:
        parts = [f"{len(v)} {name} (e.g. {', '.join(v[:4])})" for name, v in
                 (("missing", missing), ("unexpected", unexpected)) if v]
        raise ValueError(f"{source} does not fit {what}: {'; '.join(parts)} tensor name(s); are these the weights "
                         "of another architecture?")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:  # shapes differ
        raise ValueError(f"{source} does not fit {what}: {error}") from None


# -------------------------------------------------------------------------------------------------- towers
class OpenClipParts(nn.Module):
    """Modules of an open_clip model under open_clip's own attribute names (its state dict is open_clip's)."""

    def __init__(self, **parts: nn.Module):
        super().__init__()
        for name, part in parts.items():
            setattr(self, name, part)


class OpenClipImageTower(nn.Module):
    """open_clip's image tower: ``forward(x) = model.visual(x)``, ``(B, embed_dim)``, already projected."""

    projected = True

    def __init__(self, arch: OpenClipArch, visual: nn.Module):
        super().__init__()
        self.open_clip_arch = arch
        self.model = OpenClipParts(visual=visual)
        self.num_features = arch.embed_dim
        self.preprocess_cfg = copy.deepcopy(arch.preprocess_cfg)
        # Evaluation reads a wrapped model's input size and normalisation here, in timm's form, as for timm:.
        self.model.pretrained_cfg = {"input_size": (3, *arch.image_size), "mean": tuple(self.preprocess_cfg["mean"]),
                                     "std": tuple(self.preprocess_cfg["std"]),
                                     "interpolation": self.preprocess_cfg.get("interpolation")}
        self.spec = {"name": OPEN_CLIP_PREFIX + arch.name, "in_channels": 3, **arch.spec_options(image=True)}

    @property
    def image_size(self) -> int:
        return self.open_clip_arch.image_size[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.visual(x)


class OpenClipTextTower(nn.Module):
    """open_clip's text tower: ``forward(tokens) = model.encode_text(tokens, normalize=False)``, ``(B,
    embed_dim)``, already projected (token and position embeddings, causal transformer, final norm, EOT
    pooling, text projection)."""

    projected = True

    def __init__(self, arch: OpenClipArch, text_model: nn.Module):
        super().__init__()
        self.open_clip_arch = arch
        self.model = text_model
        self.num_features = arch.embed_dim
        self.context_length = int(text_model.context_length)
        self.vocab_size = int(text_model.vocab_size)
        self.tokenizer_name = arch.tokenizer_name  # None: CLIP's BPE (selfsup.views.text.tokenize)
        self.spec = {"name": OPEN_CLIP_PREFIX + arch.name, **arch.spec_options(image=False)}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens, normalize=False)


# What a tower of an open_clip architecture takes; the architecture fixes everything else.
IMAGE_TOWER_OPTIONS = ("weights", "model_cfg", "preprocess_cfg", "preprocess_tag")
TEXT_TOWER_OPTIONS = ("weights", "model_cfg")


def _check_options(arch: str, what: str, options: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"open_clip:{arch} as {what} has no option(s) {unknown} (its architecture fixes the rest); "
                          f"options: {', '.join(allowed)}")


def build_open_clip_image_tower(arch: str, in_channels: int = 3, **options: Any) -> OpenClipImageTower:
    """``backbone.name=open_clip:<arch>``. Options: ``weights`` (a local open_clip state dict, full or of
    ``visual`` alone), ``preprocess_tag``, and for architectures from files ``model_cfg`` / ``preprocess_cfg``
    (what their specs record)."""
    _check_options(arch, "a backbone", options, IMAGE_TOWER_OPTIONS)
    if in_channels != 3:
        raise ConfigError(f"open_clip image towers take 3-channel images, got in_channels={in_channels} "
                          "(set data.channels=3)")
    weights = options.pop("weights", None)
    resolved = resolve_open_clip_arch(arch, **options)
    visual, _, _, _ = split_open_clip_model(create_open_clip_model(resolved))
    tower = OpenClipImageTower(resolved, visual)
    if weights is not None:
        load_exactly(tower.model, image_part(read_open_clip_state_dict(weights)), f"the image tower of open_clip "
                     f"'{arch}'", weights)
    return tower


def build_open_clip_text_tower(arch: str, **options: Any) -> OpenClipTextTower:
    """``text_encoder=open_clip:<arch>``. Options: ``weights`` (a local full open_clip state dict), and for
    architectures from files ``model_cfg`` (what their specs record)."""
    _check_options(arch, "a text encoder", options, TEXT_TOWER_OPTIONS)
    weights = options.pop("weights", None)
    resolved = resolve_open_clip_arch(arch, **options)
    _, text_model, _, _ = split_open_clip_model(create_open_clip_model(resolved))
    tower = OpenClipTextTower(resolved, text_model)
    if weights is not None:
        load_exactly(tower.model, text_part(read_open_clip_state_dict(weights)), f"the text tower of open_clip "
                     f"'{arch}'", weights)
    return tower


__all__ = ["OPEN_CLIP_PREFIX", "OpenClipArch", "OpenClipImageTower", "OpenClipTextTower",
           "build_open_clip_image_tower", "build_open_clip_text_tower", "create_open_clip_model",
           "read_open_clip_state_dict", "resolve_open_clip_arch", "split_open_clip_model"]
