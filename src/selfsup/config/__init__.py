"""Run configuration: recipes in YAML, ``key=value`` overrides, validation that names the key.

A config is a tree of pydantic models with ``extra="forbid"``: an unknown or misspelt key fails at start with
the key's dotted path and the closest valid key. Every run saves the fully resolved config (all defaults
filled in) as ``config.yaml``.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from selfsup.config.eval_sections import (EVAL_SECTIONS, EvalConfig, EvalSection, default_eval_protocols,
                                          register_eval_section, upgrade_saved_eval)
from selfsup.config.sections import (BackboneConfig, ConfigError, DataConfig, OptimConfig, SettingsModel,
                                     TrainConfig, _Section, parse_duration)

RECIPES_DIR = Path(__file__).parent.parent / "recipes"

__all__ = ["BackboneConfig", "Config", "ConfigError", "DataConfig", "EVAL_SECTIONS", "EvalConfig", "EvalSection",
           "OptimConfig", "SettingsModel", "TrainConfig", "apply_overrides", "build_config", "default_eval_protocols",
           "friendly_error", "load_config", "load_recipe", "parse_duration", "recipe_names", "register_eval_section",
           "save_config", "validate"]


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


def load_config(path: Path) -> Config:
    """A saved config (a run's config.yaml), upgraded from earlier layouts where needed."""
    return validate(upgrade_saved_eval(yaml.safe_load(Path(path).read_text()) or {}), where=str(path))
