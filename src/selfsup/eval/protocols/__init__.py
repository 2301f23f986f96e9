"""The evaluation protocols, one file each; :data:`PROTOCOLS` holds them (registered where they are defined).

``@PROTOCOLS.register("knn")`` above a :class:`~selfsup.eval.protocols.base.Protocol` subclass registers one
instance of it and its settings model as the config section ``eval.knn``. Every module of this package is
imported below, so a new file is a new protocol: ``selfsup eval``, ``selfsup compare``, the report and the
config find it here and nowhere else. The lookups the rest of selfsup needs (which protocol wrote a metric,
its display order, what is a score) are the functions of this module.
"""
from __future__ import annotations

from selfsup.config import ConfigError, register_eval_section
from selfsup.eval.protocols.base import (FeatureSplits, ImageProtocol, ImageTask, ImageTextTask, NoSettings, Protocol,
                                         Settings)
from selfsup.registry import Registry, import_submodules

__all__ = ["PROTOCOLS", "Protocol", "ImageProtocol", "Settings", "NoSettings", "FeatureSplits", "ImageTask", "ImageTextTask",
           "protocol_of",
           "default_protocols", "all_protocols", "is_score", "is_plain_number", "metric_order"]


# Names of results.json's ``protocol`` record that are not a protocol's entry.
RESERVED_NAMES = ("protocols", "seed", "image_size")


class ProtocolRegistry(Registry[Protocol]):
    """Holds one instance per protocol class and adds the protocol's settings to the ``eval`` config."""

    def add(self, name: str, entry):
        instance = entry() if isinstance(entry, type) else entry
        if not isinstance(instance, Protocol):
            raise TypeError(f"evaluation protocol '{name}' must be a Protocol, got {entry!r}")
        if name in RESERVED_NAMES:
            raise ValueError(f"'{name}' cannot name an evaluation protocol: results.json uses it for another entry")
        instance.name = name
        super().add(name, instance)
        register_eval_section(name, instance.settings, default=instance.default)
        return entry


PROTOCOLS: ProtocolRegistry = ProtocolRegistry("evaluation protocol", key="eval.protocols", error=ConfigError)


def protocol_of(metric: str) -> Protocol | None:
    """The protocol that writes ``metric``: the one with the longest matching prefix ("linear_sgd_top1" is
    linear_sgd's, not linear's); None for a metric no registered protocol writes."""
    matches = [(length, protocol) for protocol in PROTOCOLS.values()
               if (length := protocol.writes(metric)) is not None]
    return max(matches, key=lambda match: match[0])[1] if matches else None


def default_protocols() -> tuple[str, ...]:
    return tuple(name for name, protocol in PROTOCOLS.items() if protocol.default)


def all_protocols() -> tuple[str, ...]:
    """What ``--protocols all`` runs: every protocol that does not ask to be named explicitly, in display order."""
    chosen = [protocol for protocol in PROTOCOLS.values() if protocol.in_all]
    return tuple(protocol.name for protocol in sorted(chosen, key=lambda protocol: protocol.order))


def is_score(metric: str) -> bool:
    protocol = protocol_of(metric)
    return protocol is None or metric not in protocol.not_scores


def is_plain_number(metric: str) -> bool:
    protocol = protocol_of(metric)
    return protocol is not None and metric in protocol.plain_numbers


def metric_order(metric: str) -> tuple[int, int, str]:
    """(protocol order, position of the metric's prefix in the protocol's family, the rest of the name after
    that prefix); metrics no protocol writes come after all others."""
    protocol = protocol_of(metric)
    if protocol is None:
        return (max((p.order for p in PROTOCOLS.values()), default=0) + 1, 0, metric)
    length = protocol.writes(metric)
    position = next(i for i, prefix in enumerate(protocol.family) if len(prefix) == length and
                    metric.startswith(prefix))
    return (protocol.order, position, metric[length:])


import_submodules(__name__, skip=("base",))
