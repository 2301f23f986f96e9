"""One registry helper for every kind of thing users add: methods, backbones, datasets, mask strategies,
evaluation protocols, export formats, field kinds.

A registry is filled where each entry is defined (``@METHODS.register("simclr")`` above the class), lists
what it holds, and answers an unknown name with one message: the config key, a "did you mean", and the
registered names. :func:`import_submodules` imports every module of a package, so that adding an entry is
adding a file: nothing else needs to name it. ``selfsup list`` prints :data:`ALL` (see :mod:`selfsup.cli`).

This module is a leaf: it imports nothing of selfsup.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

ALL: dict[str, "Registry"] = {}  # kind -> registry, in the order they were created


def did_you_mean(name: str, candidates, cutoff: float = 0.6) -> str:
    """`` Did you mean 'x'?`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=cutoff)
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """Named entries of one kind.

    ``kind`` names the entries in messages ("method"); ``key`` is the config key that selects one
    ("method", "backbone.name"); ``error`` is the exception type an unknown name raises (a ``ValueError``
    subclass such as :class:`selfsup.config.ConfigError`); ``also`` is appended to that message (e.g. the
    other forms a value may take)."""

    def __init__(self, kind: str, *, key: str | None = None, error: type[Exception] = ValueError, also: str = "",
                 plural: str | None = None):
        self.kind, self.key, self.error, self.also = kind, key, error, also
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, T] = {}
        ALL[kind] = self

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` registers the decorated class or function under ``name``."""

        def decorate(entry: T) -> T:
            self.add(name, entry)
            return entry

        return decorate

    def add(self, name: str, entry: T) -> T:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} '{name}' is already registered ({self._entries[name]!r}); "
                             f"cannot register {entry!r} under the same name")
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> T:
        """Unregister ``name`` (tests that register a temporary entry)."""
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise self.unknown(name)
        return self._entries[name]

    __getitem__ = get

    def unknown(self, name: str) -> Exception:
        """The exception for an unknown ``name``: the key, the closest registered name and all of them."""
        where = f"config key '{self.key}': " if self.key else ""
        message = (f"{where}unknown {self.kind} '{name}'.{did_you_mean(name, self._entries)} "
                   f"Registered: {', '.join(sorted(self._entries)) or '(none)'}")
        return self.error(message + (f"; {self.also}" if self.also else ""))

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


def import_submodules(package: str, skip: tuple[str, ...] = ()) -> None:
    """Import every module of ``package`` (not sub-packages' modules) except the names in ``skip``: each
    registers what it defines, so a new file is picked up without being named anywhere else."""
    module = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(module.__path__), key=lambda i: i.name):
        if not info.name.startswith("_") and info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")
