"""The ``eval`` section: the general evaluation keys and one section ``eval.<protocol>`` per registered
protocol (the protocols register theirs, so this module names none), with the upgrade of configs saved before
the per-protocol sections."""
from __future__ import annotations

from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from selfsup.config.sections import _Section
from selfsup.registry import did_you_mean

class EvalSection(NamedTuple):
    """One protocol's section of ``eval``: its settings model and whether it runs by default."""

    settings: type[BaseModel]
    default: bool = False


#: ``eval.<name>`` sections, filled by the evaluation protocols as they register (selfsup.eval.protocols):
#: the config names no protocol. Validation happens after ``import selfsup``, so every protocol is here by then.
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
    # Baseline rows' scores are kept in <runs_dir>/.baselines and reused by later evaluations on the same data,
    # transform and settings (selfsup.eval.baseline_cache); false recomputes them.
    cache_baselines: bool = True
    batch_size: int = Field(256, ge=1)
    # Feature extraction's precision: "train" follows train.precision (auto: bf16 autocast where the CPU or GPU
    # has native bf16, as training does); "fp32" is the exact protocol. Features of 60,000 CIFAR images took
    # 48.6 s in fp32 after a bf16 run that trained at 628 images/s.
    precision: Literal["train", "auto", "fp32", "bf16"] = "train"
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


def upgrade_saved_eval(raw: dict[str, Any]) -> dict[str, Any]:
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
