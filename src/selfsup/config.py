"""Run configuration: recipes in YAML, ``key=value`` overrides, validation that names the key.

A config is a tree of pydantic models with ``extra="forbid"``: an unknown or misspelt key fails at start with
the key's dotted path and the closest valid key. Every run saves the fully resolved config (all defaults
filled in) as ``config.yaml``.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from selfsup.registry import did_you_mean

RECIPES_DIR = Path(__file__).parent / "recipes"


class ConfigError(ValueError):
    """A config problem, with a message that names the key and says how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SettingsModel(_Section):
    """Base of the settings models that other layers define and the config validates as a section (an evaluation
    protocol's ``eval.<name>``): a misspelt key fails with its dotted path."""


class DataConfig(_Section):
    source: str = "digits"  # an embedded dataset name, an image folder or a .npz file
    image_size: int = Field(32, ge=8)
    # Input channels. None: as the data has them (3 for 8-bit pictures, the band count of raw domain data).
    channels: int | None = Field(None, ge=1)
    # How image files are read: "8bit" (decoded to 8-bit gray / RGB), "raw" (bands, dtype and range kept:
    # TIFF / GeoTIFF, 16-bit PNG, .npy / .npz, NIfTI, DICOM; selfsup.data.readers), "auto" (raw when the files
    # need it: more bands, more bits, or a raw-only format).
    pixels: Literal["auto", "8bit", "raw"] = "auto"
    # Raw data: the statistics file (`selfsup data stats DIR`); None: DIR/.selfsup-stats.json when it exists,
    # else computed at start. They fix the pixel window (clip_percentiles of each band -> [0, 1]) and the
    # normalisation (the windowed data's mean / std). clip_percentiles null: each band's min..max.
    stats: str | None = None
    clip_percentiles: tuple[float, float] | None = (1.0, 99.0)
    # Which photometric augmentations apply (selfsup.data.pixels): "rgb", "gray" (8-bit pictures), "bands"
    # (measurements: per-band jitter, band dropout, spectral tilt, noise); "auto": from the data.
    channel_kind: Literal["auto", "rgb", "gray", "bands"] = "auto"
    # Overhead imagery (satellite, aerial, microscopy, slides): vertical flips and 90-degree rotations in every
    # view, besides the horizontal flips of data.hflip.
    overhead: bool = False
    # Volumes (the volumes dataset): train on their 2-D depth slices instead (every slice an image with its
    # volume's label, the held-out split still by volume), so every 2-D method and backbone applies.
    slices: bool = False

    @field_validator("clip_percentiles")
    @classmethod
    def _percentiles_ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0.0 <= value[0] < value[1] <= 100.0:
            raise ValueError(f"must be two percentiles low < high within 0..100 (e.g. [1, 99]), not {list(value)}")
        return value
    max_bad_fraction: float = Field(0.1, ge=0.0, le=1.0)
    holdout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    num_workers: int = Field(2, ge=0)
    # Horizontal flips in every view. None: the data's own default (False for the embedded digits, whose mirror
    # images are other glyphs; True for folders and arrays). Set False for text, digits, or oriented medical images.
    hflip: bool | None = None
    # Where views are cropped, resized and coloured: "workers" (per sample, in the DataLoader workers), "device"
    # (batched on the training device, selfsup.views.device; needs one image size: arrays, embedded sets,
    # data.cache), "auto" (the faster of the two, measured at start). The same views either way.
    augment: Literal["workers", "device", "auto"] = "workers"
    cache: bool = False  # image folders: decode once into <runs_dir>/.cache, reused by later runs (selfsup.data.cache)
    cache_size: int | None = Field(None, ge=8)  # side of the cached squares; None: round(1.25 * image_size)
    mean: list[float] | None = None  # per-channel normalisation; None = measured from the data
    std: list[float] | None = None


class BackboneConfig(_Section):
    name: str = "small_resnet"
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the backbone's constructor
    # Start from these weights (a .safetensors / .pt state dict, a saved backbone or a run folder) instead of a
    # random init; heads start fresh. A first layer of another band count (RGB weights, 13-band data) is
    # carried to the data's bands by `carry` (selfsup.backbones.channels): "repeat" (repeat-and-scale, exact on
    # gray images) or "rgb_bands" (the RGB kernels on the bands listed in rgb_bands, e.g. [3, 2, 1] for B4, B3,
    # B2 of Sentinel-2).
    weights: str | None = None
    carry: Literal["repeat", "rgb_bands"] = "repeat"
    rgb_bands: list[int] | None = None


class OptimConfig(_Section):
    name: Literal["adamw", "sgd", "lars"] = "adamw"
    lr: float = Field(1e-3, gt=0)  # for batch_size 256; scaled linearly with the global batch when scale_lr
    scale_lr: bool = True
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: float = Field(0.05, ge=0, lt=1)  # fraction of training spent in linear warm-up
    final_lr_fraction: float = Field(0.0, ge=0, le=1)  # cosine decays to lr * final_lr_fraction
    grad_clip: float | None = Field(None, gt=0)
    exclude_bias_and_norm: bool = True  # no weight decay (and no LARS adaptation) on biases and norm params
    fused: bool | None = None  # AdamW/SGD kernel: True fused, False foreach; None: fused on CUDA, foreach on CPU


class TrainConfig(_Section):
    batch_size: int = Field(256, ge=2)  # per optimizer step, over all ranks and accumulation steps
    accumulate: int = Field(1, ge=1)
    epochs: float | None = Field(None, gt=0)
    budget: str | None = None  # wall-clock budget, e.g. "90s", "10m", "2h"; the schedule follows elapsed time
    max_steps: int | None = Field(None, ge=1)  # hard stop (tests, debugging); also the schedule length if alone
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = True
    compile: bool = False  # torch.compile the backbone; falls back to eager, with a warning, where it fails
    sync_batchnorm: bool | None = None  # under DDP; None: as the method asks (BYOL, SimSiam, SwAV, DINO do)
    deterministic: bool = False
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(200, ge=1)  # steps; a checkpoint is also written at the end and on SIGTERM
    monitor_every: int = Field(50, ge=1)  # collapse monitor period (steps)
    progress: bool = True

    @field_validator("budget")
    @classmethod
    def _budget_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


class EvalSection(NamedTuple):
    """One protocol's section of ``eval``: its settings model and whether it runs by default."""

    settings: type[BaseModel]
    default: bool = False


#: ``eval.<name>`` sections, filled by the evaluation protocols as they register (selfsup.eval.protocols):
#: config.py names no protocol. Validation happens after ``import selfsup``, so every protocol is here by then.
EVAL_SECTIONS: dict[str, EvalSection] = {}


def register_eval_section(name: str, settings: type[BaseModel], default: bool = False) -> None:
    """Add the ``eval.<name>`` section, validated by ``settings`` (a pydantic model with extra="forbid")."""
    if name in EVAL_SECTIONS and EVAL_SECTIONS[name].settings is not settings:
        raise ValueError(f"eval section '{name}' is registered twice")
    if name in EvalConfig.model_fields:
        raise ValueError(f"eval section '{name}' would hide the general key eval.{name}")
    EVAL_SECTIONS[name] = EvalSection(settings, default)


def default_eval_protocols() -> list[str]:
    return [name for name, section in EVAL_SECTIONS.items() if section.default]


def _new_place(key: str) -> tuple[str, str] | None:
    """(protocol, field) where a flat ``eval`` key of before the per-protocol sections (``knn_k``) now lives
    (``eval.knn.k``), or None for a key that never existed."""
    for name, section in EVAL_SECTIONS.items():
        field = key[len(name) + 1:]
        if key.startswith(name + "_") and field in section.settings.model_fields:
            return name, field
    return None


def _renamed(key: str) -> str | None:
    """How an ``eval`` key of before the per-protocol sections now reads, or None for an unknown key."""
    place = _new_place(key)
    return f"eval.{key} is now eval.{place[0]}.{place[1]}" if place else None


def _section_value(name: str, value: Any, data: dict) -> str | None:
    """The message for a section given a plain value (``eval.linear: false`` used to switch a protocol off)."""
    if isinstance(value, (dict, BaseModel)):
        return None
    chosen = list(data.get("protocols") or default_eval_protocols())
    others = ",".join(p for p in chosen if p != name)
    hint = ""
    if value is False:
        hint = (f"; `eval.{name}: false` used to drop that protocol: now that is eval.protocols without it, "
                f"e.g. eval.protocols=[{others}]")
    elif value is True:
        hint = f"; `eval.{name}: true` is now {name} in eval.protocols, e.g. eval.protocols=[{others},{name}]"
    keys = ", ".join(f"eval.{name}.{k}" for k in EVAL_SECTIONS[name].settings.model_fields)
    return f"eval.{name} is now the section of the {name} protocol's settings ({keys or 'none'}){hint}"


class EvalConfig(_Section):
    """The general evaluation keys, and one section ``eval.<protocol>`` per registered protocol (its settings,
    validated by the protocol's own model, defaults filled in so that config.yaml is fully resolved)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    enabled: bool = True
    # The protocols that register as default (kNN, linear); the others cost more and are opt-in.
    protocols: list[str] = Field(default_factory=default_eval_protocols)
    baselines: bool = True
    batch_size: int = Field(256, ge=1)
    report: bool = True  # write report.html at the end of the run (also: `selfsup report RUN_DIR`)

    @classmethod
    def sections(cls) -> dict[str, type[BaseModel]]:
        return {name: section.settings for name, section in EVAL_SECTIONS.items()}

    @field_validator("protocols")
    @classmethod
    def _registered(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in EVAL_SECTIONS:
                raise ValueError(f"unknown evaluation protocol '{name}'.{did_you_mean(name, EVAL_SECTIONS)} "
                                 f"Registered: {', '.join(EVAL_SECTIONS)}")
        return names

    @model_validator(mode="wrap")
    @classmethod
    def _validate_sections(cls, data: Any, handler):
        if not isinstance(data, dict):
            return handler(data)
        general = {k: v for k, v in data.items() if k in cls.model_fields}
        errors, sections = [], {}
        for name, section in EVAL_SECTIONS.items():
            value = data.get(name, {})
            message = _section_value(name, value, data)
            if message is not None:
                errors.append({"type": PydanticCustomError("renamed_key", message), "loc": (name,), "input": value})
                continue
            try:
                sections[name] = section.settings.model_validate(value)
            except ValidationError as error:
                errors += [{"type": item["type"], "loc": (name, *item["loc"]), "input": item.get("input"),
                            **({"ctx": item["ctx"]} if "ctx" in item else {})} for item in error.errors()]
        for key, value in data.items():
            if key not in cls.model_fields and key not in EVAL_SECTIONS:
                renamed = _renamed(key)
                kind = PydanticCustomError("renamed_key", renamed) if renamed else "extra_forbidden"
                errors.append({"type": kind, "loc": (key,), "input": value})
        try:
            validated = handler({**general, **sections})
        except ValidationError as error:
            errors = [{"type": item["type"], "loc": item["loc"], "input": item.get("input"),
                       **({"ctx": item["ctx"]} if "ctx" in item else {})} for item in error.errors()] + errors
            validated = None
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return validated


class Config(_Section):
    name: str | None = None  # run name; default <method>-<backbone>-<timestamp>
    runs_dir: str = "runs"
    seed: int = 0
    method: str = "simclr"
    method_options: dict[str, Any] = Field(default_factory=dict)  # validated by the method's own options model
    data: DataConfig = Field(default_factory=DataConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


def parse_duration(text: str) -> float:
    """'90s', '10m', '1.5h', '1h30m' or a bare number of seconds -> seconds."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"cannot read duration '{text}': use e.g. '90s', '10m', '1.5h' or '1h30m'")
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * scale[u] for n, u in parts)


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        keys.append(path)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_valid_keys(ann, path + "."))
    sections = model.sections() if hasattr(model, "sections") else {}  # EvalConfig: one per protocol
    for name, section in sections.items():
        keys.append(f"{prefix}{name}")
        keys.extend(_valid_keys(section, f"{prefix}{name}."))
    return keys


def friendly_error(error: ValidationError, model: type[BaseModel], where: str, prefix: str = "") -> ConfigError:
    lines = []
    valid = _valid_keys(model)
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        if item["type"] == "renamed_key":
            lines.append(item["msg"])
        elif item["type"] == "extra_forbidden":
            leaf = key.rsplit(".", 1)[-1]
            parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
            siblings = [k for k in valid if k.startswith(parent) and "." not in k[len(parent):]]
            close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.5) or difflib.get_close_matches(
                leaf, [k.rsplit(".", 1)[-1] for k in valid], n=1, cutoff=0.6)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            lines.append(f"unknown config key '{prefix}{key}'.{hint} "
                         f"Valid keys here: {', '.join(prefix + k for k in siblings)}")
        else:
            lines.append(f"config key '{prefix}{key}': {item['msg']} (got {item.get('input')!r})")
    return ConfigError(f"invalid config ({where}):\n  " + "\n  ".join(lines))


def validate(raw: dict[str, Any], where: str = "config", model: type[BaseModel] = None) -> BaseModel:
    model = model or Config
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise friendly_error(error, model, where) from None


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str | Path) -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = RECIPES_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        close = difflib.get_close_matches(str(name_or_path), recipe_names(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"recipe '{name_or_path}' not found.{hint} Built-in recipes: {', '.join(recipe_names())}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path} must be a YAML mapping of keys, not {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value, e.g. train.batch_size=128")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = yaml.safe_load(value) if value != "" else None
    return raw


def build_config(recipe: str | Path | None = None, overrides: list[str] | None = None, **sections: Any) -> Config:
    """Recipe (optional) <- keyword sections (Python API) <- ``key=value`` overrides, then validation."""
    raw = load_recipe(recipe) if recipe else {}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        else:
            raw[key] = value
    apply_overrides(raw, overrides or [])
    return validate(raw, where=f"recipe {recipe}" if recipe else "config")


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def _upgrade_saved_eval(raw: dict[str, Any]) -> dict[str, Any]:
    """A config.yaml saved before the per-protocol sections (flat ``eval.knn_k``, ``eval.linear: false``, ...)
    in today's form, so that earlier runs still evaluate and report. Only saved files are upgraded: a user's
    recipe or override with an old key fails with its new place."""
    section = raw.get("eval")
    if not isinstance(section, dict):
        return raw
    section = dict(section)
    if isinstance(section.get("linear"), bool):
        if not section.pop("linear"):
            section["protocols"] = [p for p in section.get("protocols") or default_eval_protocols() if p != "linear"]
    for key in [k for k in section if k not in EvalConfig.model_fields and k not in EVAL_SECTIONS]:
        place = _new_place(key)
        if place is not None:
            section.setdefault(place[0], {})[place[1]] = section.pop(key)
    return {**raw, "eval": section}


def load_config(path: Path) -> Config:
    """A saved config (a run's config.yaml), upgraded from earlier layouts where needed."""
    return validate(_upgrade_saved_eval(yaml.safe_load(Path(path).read_text()) or {}), where=str(path))
