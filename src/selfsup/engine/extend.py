"""Extending a finished run: ``selfsup train --resume RUN train.budget=+10m`` (or ``train.max_steps=+N``,
``train.epochs=+E``).

A cosine schedule has decayed to its end when the run finishes: lengthening it would raise the learning rate
of every later step back towards the peak, which is a re-warm and a loss spike. The ``wsd`` and ``infinite``
schedules (:mod:`selfsup.schedules`) hold a constant rate until their final decay, and their values before it
do not depend on the run's length, so the trainer keeps the state where the decay began
(:func:`selfsup.runs.decay_checkpoint_path`). An extension continues from that state in the stable phase of
the longer schedule and decays again at its new end, as continual pre-training with these schedules does
(Hägele et al., NeurIPS 2024, section 3; Ibrahim et al., TMLR 2024, section 7): no re-warm, no spike. The
steps of the first decay are left behind (their records move to ``metrics.superseded.jsonl``).
"""
from __future__ import annotations

from pathlib import Path

from selfsup.config import Config, ConfigError, parse_duration
from selfsup.engine.lr import EXTENDABLE
from selfsup.runs import SUMMARY_FILE, decay_checkpoint_path

#: train keys whose value may be given relative to the run's own, ``+<amount>``
RELATIVE_KEYS = ("budget", "max_steps", "epochs")


def _length(cfg: Config) -> tuple:
    return cfg.train.epochs, cfg.train.max_steps, parse_duration(cfg.train.budget) if cfg.train.budget else None


def relative_overrides(cfg: Config, overrides: list[str]) -> list[str]:
    """``overrides`` with ``train.budget=+10m`` / ``train.max_steps=+500`` / ``train.epochs=+2`` added to the
    run's own value of the key (a run that did not set that key fails with the keys it did set)."""
    resolved = []
    for item in overrides:
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        field = key.removeprefix("train.")
        if key.startswith("train.") and field in RELATIVE_KEYS and value.startswith("+"):
            own = getattr(cfg.train, field)
            if own is None:
                used = ", ".join(f"train.{k}={getattr(cfg.train, k)}" for k in RELATIVE_KEYS
                                 if getattr(cfg.train, k) is not None)
                raise ConfigError(f"override '{item}' extends the run's {key}, but the run was not trained by "
                                  f"{key} ({used}): extend the key it was trained by, e.g. "
                                  f"train.{next(k for k in RELATIVE_KEYS if getattr(cfg.train, k) is not None)}=+...")
            try:
                if field == "budget":
                    value = f"{parse_duration(own) + parse_duration(value[1:]):g}s"
                else:
                    value = str(own + (int(value[1:]) if field == "max_steps" else float(value[1:])))
            except ValueError as error:
                raise ConfigError(f"override '{item}': {error}") from None
            item = f"{key}={value}"
        resolved.append(item)
    return resolved


def extension_checkpoint(saved: Config, cfg: Config, run_dir: Path) -> Path | None:
    """Where a resumed run continues from when it extends a finished run (``cfg`` trains longer than the
    ``saved`` config did): the checkpoint before the final decay. None when the run is not finished or is not
    lengthened (it continues from its last checkpoint, or stays finished)."""
    if not (Path(run_dir) / SUMMARY_FILE).exists() or _length(cfg) == _length(saved):
        return None
    if all(new is None or (old is not None and new <= old) for new, old in zip(_length(cfg), _length(saved))):
        return None  # shorter or equal: a finished run stays finished
    if cfg.optim.schedule not in EXTENDABLE:
        raise ConfigError(f"{run_dir} finished a {cfg.optim.schedule} schedule, which has decayed to its end: "
                          "extending it would raise the learning rate again (a loss spike). Start a new run from "
                          f"its weights (backbone.weights={run_dir}), or train runs you mean to extend with "
                          "optim.schedule=wsd (or infinite)")
    path = decay_checkpoint_path(run_dir)
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {path.name}, the state before its final decay that an extension "
                          "continues from (the run did not reach its decay?): start a new run from its weights "
                          f"(backbone.weights={run_dir})")
    return path
