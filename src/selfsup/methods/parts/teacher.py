"""A frozen teacher: a pre-trained backbone (optionally with a classifier head) that a distillation method reads
and never trains (:mod:`selfsup.methods.distill`, :mod:`selfsup.methods.dmae`,
:mod:`selfsup.methods.simclrv2_distill`).

Where it comes from (``method_options.teacher``, :class:`TeacherOptions`): a saved selfsup backbone (a run
folder, a folder holding ``backbone.safetensors`` + ``backbone.json``, or such a ``.safetensors`` file), whose
JSON already says its architecture, image size and normalisation; or an architecture by name (``name``,
``options``) with a weights file (any state dict :func:`~selfsup.backbones.weights.load_weights_into` reads); or,
for tests and baselines only, ``random_init: true``. ``method_options.teacher=runs/teacher`` is short for
``method_options.teacher.weights=runs/teacher``. Nothing is ever downloaded.

Frozen: the teacher's modules are held outside the method's module tree, so its parameters are not among the
method's (never in the optimizer, never in DDP's gradient buckets), ``method.train()`` never reaches them (the
teacher stays in eval mode: BatchNorm uses its running statistics, dropout is off), it is not in the state dict
(checkpoints stay the student's size) and it is never the exported backbone. ``.to(device)`` does reach it. A
checkpoint holds only the teacher's fingerprint (a checksum of its tensors): a resume rebuilds the teacher from
its options (a random-init teacher from its ``seed``) and fails if it is not the same teacher. Every teacher
forward runs under ``torch.no_grad``.

Its input: the views reach the method normalised with the student run's mean and std. The teacher reads the
same view resized (bilinear, antialiased when shrinking) to its own ``image_size``; when the views' normalisation
is given (``views_mean`` / ``views_std``: the student run's ``data.mean`` / ``data.std``) and the teacher's own
(from its ``backbone.json``, or ``mean`` / ``std``) differs, the view is renormalised to the teacher's. Without
``views_mean`` the views are taken to be normalised as the teacher expects, which holds when teacher and student
were trained on the same data with measured statistics, or when the student run sets ``data.mean`` /
``data.std`` to the teacher's.

Features: pooled (``features``), a spatial map (``feature_map``: a ViT's patch tokens on its grid, a ConvNet's
last feature map), a ViT's tokens after any block (``tokens``, for DMAE), class logits (``logits``, with a head).
"""
from __future__ import annotations

import hashlib
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from safetensors import safe_open

from selfsup.backbones import build_backbone
from selfsup.backbones.weights import load_weights_into, read_state_dict
from selfsup.config import ConfigError
from selfsup.export.backbone_io import HEADER_KEY, resolve_backbone_files, save_safetensors_atomic
from selfsup.methods.base import MethodOptions
from selfsup.methods.common import has_token_access

HEAD_KEYS = ("head.weight", "head.bias")  # a classifier teacher's linear head, in its weights file or `head`
MISSING_TEACHER = ("method_options.teacher is not set: this method distils a frozen teacher. Give a saved backbone, "
                   "method_options.teacher=runs/<teacher run> (a run folder, a backbone folder or a "
                   "backbone.safetensors), or an architecture and its weights: method_options.teacher.name=resnet18 "
                   "method_options.teacher.weights=FILE")


def log(message: str) -> None:
    print(f"[selfsup] {message}", file=sys.stderr, flush=True)  # the run's log format (selfsup.runs.log, above us)


class TeacherOptions(BaseModel):
    """Where the frozen teacher comes from and how it reads the views (``method_options.teacher.*``)."""

    model_config = ConfigDict(extra="forbid")

    weights: str | None = None  # a run folder, a saved backbone (folder or .safetensors), or a state dict file
    name: str | None = None  # the architecture (a BACKBONES name, timm:<name>); default: the saved backbone's
    options: dict[str, Any] = Field(default_factory=dict)  # its build options, with `name`
    head: str | None = None  # a .safetensors with head.weight (K, D) and head.bias (K,) (classifier teachers)
    random_init: bool = False  # no weights: a random teacher, for tests and baselines only
    seed: int = 0  # the random-init teacher's weights (and head), so that a resume rebuilds the same one
    classes: int | None = Field(None, ge=2)  # the random-init classifier head's classes
    image_size: int | None = Field(None, ge=1)  # default: the saved backbone's, else the views' size
    mean: list[float] | None = None  # the teacher's normalisation; default: the saved backbone's
    std: list[float] | None = None
    views_mean: list[float] | None = None  # the student run's data.mean / data.std, if it differs from the teacher's
    views_std: list[float] | None = None


class TeacherChoice(MethodOptions):
    """``method_options.teacher``: a :class:`TeacherOptions`, or a path as short for its ``weights``."""

    # A model, not Optional[model], so that a misspelt key names the valid ones; unset = all defaults.
    teacher: TeacherOptions = Field(default_factory=TeacherOptions)

    @field_validator("teacher", mode="before")
    @classmethod
    def _path_shorthand(cls, value):
        if value is None:
            return {}
        return {"weights": str(value)} if isinstance(value, (str, Path)) else value


class TeacherMethodOptions(TeacherChoice):
    """The teacher, which view it reads and its feature cache (the methods that distil pooled features)."""

    # "same": the teacher reads the student's (augmented) view; "clean": an extra un-augmented view, the whole
    # image resized (the evaluation view), whose teacher features are computed once per sample and cached
    teacher_view: Literal["same", "clean"] = "same"
    teacher_cache: bool = True  # cache the clean view's teacher features by sample index (batch["index"])


def saved_backbone_meta(path: str | Path) -> dict | None:
    """The ``backbone.json`` (or safetensors header) of a saved selfsup backbone at ``path``; None for a plain
    state dict file."""
    try:
        weights, meta_path = resolve_backbone_files(path)
    except ValueError:  # not a .safetensors file: a torch state dict, which carries no metadata
        return None
    if meta_path is not None:
        return json.loads(meta_path.read_text())
    with safe_open(str(weights), framework="pt") as f:
        header = (f.metadata() or {}).get(HEADER_KEY)
    return json.loads(header) if header else None


def _fingerprint(modules: list[nn.Module]) -> torch.Tensor:
    """The first 8 bytes of a SHA-256 of every tensor, as an int64 (an integer buffer: no dtype cast of the
    method, ``.half()`` or ``.to(bfloat16)``, changes it)."""
    digest = hashlib.sha256()
    for module in modules:
        for key, tensor in module.state_dict().items():
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return torch.tensor(int.from_bytes(digest.digest()[:8], "little", signed=True), dtype=torch.int64)


class FrozenTeacher(nn.Module):
    """The teacher (see the module docstring); build it with :func:`build_teacher`."""

    def __init__(self, model: nn.Module, head: nn.Linear | None, *, image_size: int | None,
                 mean: list[float] | None, std: list[float] | None, views_mean: list[float] | None,
                 views_std: list[float] | None, description: str):
        super().__init__()
        for module in (model, head):
            if module is not None:
                module.eval().requires_grad_(False)
        self._frozen = (model, head)  # a tuple, not attributes: outside the module tree (module docstring)
        self.image_size, self.description = image_size, description
        self.num_features = int(model.num_features)
        self.num_classes = int(head.out_features) if head is not None else None
        self.is_vit = has_token_access(model)
        self.register_buffer("fingerprint", _fingerprint([m for m in (model, head) if m is not None]))
        scale, shift = torch.ones(0), torch.zeros(0)
        if views_mean is not None and mean is not None and (list(views_mean), list(views_std)) != (list(mean), list(std)):
            # teacher input = (x * views_std + views_mean - mean) / std
            scale = torch.tensor(views_std) / torch.tensor(std)
            shift = (torch.tensor(views_mean) - torch.tensor(mean)) / torch.tensor(std)
        self.register_buffer("renorm_scale", scale.view(1, -1, 1, 1) if len(scale) else scale, persistent=False)
        self.register_buffer("renorm_shift", shift.view(1, -1, 1, 1) if len(shift) else shift, persistent=False)
        super().train(False)

    @property
    def model(self) -> nn.Module:
        return self._frozen[0]

    @property
    def head(self) -> nn.Linear | None:
        return self._frozen[1]

    def train(self, mode: bool = True) -> "FrozenTeacher":
        """Always eval: a method put in train mode leaves its teacher in eval mode."""
        self.model.eval()
        return super().train(False)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for module in self._frozen:  # .to(device), .double() ... reach the modules kept outside the tree
            if module is not None:
                module._apply(fn, recurse)
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        saved = state_dict.get(prefix + "fingerprint")
        if saved is not None and int(saved) != int(self.fingerprint):
            error_msgs.append(f"the teacher ({self.description}) is not the one this checkpoint was trained with "
                              "(its weights changed): give method_options.teacher the same teacher to resume")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # -- input ------------------------------------------------------------------------------------------------
    def prepare(self, views: torch.Tensor) -> torch.Tensor:
        """The student's normalised views as the teacher's input: renormalised and resized (module docstring)."""
        if self.renorm_scale.numel():
            views = views * self.renorm_scale.to(views.dtype) + self.renorm_shift.to(views.dtype)
        size = self.image_size
        if size is not None and tuple(views.shape[-2:]) != (size, size):
            views = F.interpolate(views, size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=views.shape[-1] > size)
        return views

    # -- features (no gradient) -------------------------------------------------------------------------------
    @torch.no_grad()
    def features(self, views: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, num_features), float32."""
        return self.model(self.prepare(views)).float()

    @torch.no_grad()
    def logits(self, views: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
        """The classifier's logits (B, K), of ``views`` or of already computed pooled ``features``."""
        if self.head is None:
            raise ValueError(f"the teacher ({self.description}) has no classifier head")
        features = self.features(views) if features is None else features
        return self.head(features.to(self.head.weight.dtype)).float()

    @torch.no_grad()
    def feature_map(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled (B, D), spatial map (B, D, h, w)), float32."""
        pooled, fmap = spatial_features(self.model, self.prepare(views))
        return pooled.float(), fmap.float()

    @torch.no_grad()
    def tokens(self, views: torch.Tensor, keep_indices: torch.Tensor | None = None,
               layer: int | None = None) -> torch.Tensor:
        """A ViT teacher's patch tokens (B, K, D) after block ``layer`` (1 = the first; None: the final, normalised
        tokens), of the ``keep_indices`` patches only when given; the blocks after ``layer`` never run."""
        views = self.prepare(views)
        if layer is None:
            return self.model.forward_tokens(views, keep_indices=keep_indices)["patches"].float()
        with block_output(self.model, layer, stop=True) as captured:
            self.model.forward_tokens(views, keep_indices=keep_indices)
        return captured[0].float()


def spatial_features(backbone: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features, spatial map (B, C, h, w)) of ``backbone``: a ViT's patch tokens laid on its grid and its
    own pooling; a ConvNet's last feature map (``forward_features``) and its global average (the pooling of
    every ConvNet backbone here)."""
    if has_token_access(backbone):
        if getattr(backbone, "channelwise", False):
            raise ValueError("a channel-wise ViT has no single patch grid to distil on (channelwise=True)")
        tokens = backbone.forward_tokens(images)
        grid = backbone.grid_for(*images.shape[-2:])
        fmap = tokens["patches"].transpose(1, 2).reshape(len(images), -1, *grid)
        return backbone.pool(tokens), fmap
    if not hasattr(backbone, "forward_features"):
        name = getattr(backbone, "spec", {}).get("name", type(backbone).__name__)
        raise ValueError(f"{name} gives no feature map (neither patch tokens nor forward_features): distil its "
                         "pooled features only (patch_weight=0)")
    fmap = backbone.forward_features(images)
    return fmap.mean(dim=(2, 3)), fmap


class _Enough(Exception):
    """Raised by the capturing hook to stop a ViT after the block it needs (the later blocks never run)."""


@contextmanager
def block_output(backbone: nn.Module, layer: int, stop: bool = False):
    """Inside, a ViT's forwards append their patch tokens after block ``layer`` (1-based, before the final norm),
    (B, K, D), to the yielded list; ``stop``: the blocks after it do not run (the forward ends there)."""
    depth = len(backbone.model.blocks)
    if not 1 <= layer <= depth:
        raise ValueError(f"layer {layer} is not a block of this ViT (1 to {depth})")
    captured: list[torch.Tensor] = []

    def capture(module, inputs, output):
        captured.append(output[:, backbone.num_prefix_tokens:])
        if stop:
            raise _Enough

    handle = backbone.model.blocks[layer - 1].register_forward_hook(capture)
    try:
        yield captured
    except _Enough:
        pass
    finally:
        handle.remove()


def build_teacher(options: TeacherOptions | None, in_channels: int, *, classifier: bool = False) -> FrozenTeacher:
    """The frozen teacher of ``options`` for images of ``in_channels`` bands; ``classifier``: it needs a head."""
    if options is None or options == TeacherOptions():
        raise ConfigError(MISSING_TEACHER)
    if options.weights is None and not options.random_init:
        raise ConfigError("method_options.teacher has no weights: set method_options.teacher.weights=<run folder, "
                          "saved backbone or weights file> (random_init: true only for tests)")
    meta = None
    if options.weights is not None:
        try:
            meta = saved_backbone_meta(options.weights)
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(f"config key 'method_options.teacher.weights': {error}") from None
    if options.name is None and meta is None:
        raise ConfigError(f"config key 'method_options.teacher': {options.weights or 'a random-init teacher'} does "
                          "not say its architecture (no backbone.json): give method_options.teacher.name (e.g. "
                          "resnet18) and method_options.teacher.options")
    name, build_options = (options.name, dict(options.options)) if options.name else (None, dict(meta["spec"]))
    if name is None:
        name = build_options.pop("name")
    channels = int(build_options.pop("in_channels", in_channels))
    if channels != in_channels:
        raise ConfigError(f"config key 'method_options.teacher': the teacher takes {channels} input bands, the data "
                          f"has {in_channels}")
    with torch.random.fork_rng():
        torch.manual_seed(options.seed)  # a random-init teacher (and head) rebuilt identically on resume
        model = build_backbone(name, in_channels, **build_options)
        head = _head(options, model, meta, classifier)
    if options.weights is not None:
        try:
            load_weights_into(model, options.weights, log)
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(f"config key 'method_options.teacher.weights': {error}") from None
    normalization = (meta or {}).get("normalization", {})
    mean, std = options.mean or normalization.get("mean"), options.std or normalization.get("std")
    if (options.views_mean is None) != (options.views_std is None) or (mean is None) != (std is None):
        raise ConfigError("config key 'method_options.teacher': give mean with std, and views_mean with views_std")
    if options.views_mean is not None and mean is None:
        raise ConfigError("config key 'method_options.teacher.views_mean': the teacher's own normalisation is unknown "
                          "(no backbone.json): give method_options.teacher.mean and .std to renormalise to")
    for key, values in (("mean", mean), ("std", std), ("views_mean", options.views_mean),
                        ("views_std", options.views_std)):
        if values is not None and len(values) != in_channels:
            raise ConfigError(f"config key 'method_options.teacher.{key}': {len(values)} values for {in_channels} bands")
    where = options.weights or f"random init, seed {options.seed}"
    description = f"{name} ({where})"
    teacher = FrozenTeacher(model, head, image_size=options.image_size or (meta or {}).get("image_size"), mean=mean,
                            std=std, views_mean=options.views_mean, views_std=options.views_std,
                            description=description)
    count = sum(p.numel() for p in model.parameters())
    size = f"{teacher.image_size} px" if teacher.image_size else "the views' size"
    log(f"teacher: {description}, {count / 1e6:.2f} M parameters, frozen, reads {size}")
    return teacher


def _head(options: TeacherOptions, model: nn.Module, meta: dict | None, needed: bool) -> nn.Linear | None:
    """The classifier head: from ``options.head``, else ``head.*`` in the weights file, else random (random_init)."""
    if not needed:
        return None
    source = options.head or options.weights
    tensors = {}
    if source is not None:
        try:
            state = read_state_dict(source)
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(f"config key 'method_options.teacher.head': {error}") from None
        tensors = {key: state[key] for key in HEAD_KEYS if key in state}
    if len(tensors) < len(HEAD_KEYS) and not options.random_init:
        raise ConfigError(f"config key 'method_options.teacher.head': {source} holds no {' and '.join(HEAD_KEYS)}: "
                          "this method distils a classifier; save the head of a classifier on the teacher's "
                          "features with selfsup.methods.parts.teacher.save_head(head, FILE) and set "
                          "method_options.teacher.head=FILE")
    if tensors:
        classes, dim = tensors["head.weight"].shape
    else:
        classes, dim = options.classes or 10, model.num_features
    if dim != model.num_features:
        raise ConfigError(f"config key 'method_options.teacher.head': the head takes {dim} features, the teacher "
                          f"gives {model.num_features}")
    head = nn.Linear(dim, classes)
    if tensors:
        head.load_state_dict({key.split(".", 1)[1]: value for key, value in tensors.items()})
    return head


def save_head(head: nn.Linear, path: str | Path) -> Path:
    """Write a linear classifier as ``head.weight`` / ``head.bias`` in a safetensors file (atomically): what
    ``method_options.teacher.head`` reads for a classifier teacher (SimCLRv2-style distillation)."""
    tensors = {"head.weight": head.weight.detach().float().cpu().contiguous(),
               "head.bias": head.bias.detach().float().cpu().contiguous()}
    return save_safetensors_atomic(tensors, path)
