"""The bad-file policy every scanned source shares (folders, caption manifests, tar shards).

A scan checks every entry once (decodes the image, reads its caption) and skips the bad ones, each listed in
the source's ``bad_files`` as ``(path or place, reason)``; the run writes them to ``bad_files.txt``. Too many
bad entries (all of them, or more than ``data.max_bad_fraction``) mean the data as a whole is wrong: that
is a :class:`DataError` naming the first few and the config key that tolerates more.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from selfsup.data.sources import DataError


def check_bad_fraction(bad: Sequence[tuple[str, str]], total: int, place: str, max_bad_fraction: float,
                       entry: str = "image file", problem: str = "could not be decoded") -> None:
    """Raise :class:`DataError` when every one of ``total`` entries is bad or more than ``max_bad_fraction``
    of them are. ``entry``, ``place`` and ``problem`` word the message ("3 of 8 image files" "under /data"
    "could not be decoded")."""
    if total and len(bad) < total and len(bad) <= max_bad_fraction * total:
        return
    shown = "\n".join(f"  {p}: {r}" for p, r in bad[:5])
    more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
    what = f"every {entry}" if len(bad) >= total else f"{len(bad)} of {total} {entry}s ({len(bad) / total:.1%})"
    raise DataError(
        f"{what} {place} {problem}, more than data.max_bad_fraction={max_bad_fraction}:\n"
        f"{shown}{more}\nRemove or fix these files, or raise data.max_bad_fraction to skip them."
    )


def write_bad_files(bad_files: Iterable[tuple[str, str]], path: str | os.PathLike) -> None:
    """Write one ``path<TAB>reason`` line per bad file (tabs/newlines inside a field become spaces)."""

    def clean(text: str) -> str:
        return " ".join(str(text).replace("\t", " ").splitlines())

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{clean(p)}\t{clean(reason)}\n" for p, reason in bad_files]
    path.write_text("".join(lines), encoding="utf-8")
