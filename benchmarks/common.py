"""Shared helpers for benchmark scripts: machine description, JSON rows, CIFAR-10 unpacking."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from selfsup.cpu import cpu_flags, cpu_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"


def machine() -> str:
    """The GPU, or the CPU model, and the core count (``write_row`` records the CPU flags beside it)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (+{os.cpu_count()} CPU cores)"
    return f"{cpu_model()}, {os.cpu_count()} cores"


def git_commit() -> str | None:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip() or None


def write_row(name: str, row: dict) -> Path:
    """Write one benchmark result as benchmarks/results/<name>.json (the single source of RESULTS.md), with the
    machine: its name (CPU model or GPU, cores) and the CPU flags bf16 speed depends on (``cpu_flags``)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    row = {"machine": machine(), "cpu_flags": cpu_flags(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
           "git_commit": git_commit(), **row}
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(row, indent=2) + "\n")
    return path


def cifar10_folder() -> Path:
    """CIFAR-10 JPEGs from ../shared/data, unpacked once into the ignored .data/ folder."""
    target = ROOT / ".data" / "cifar10"
    if (target / "train").is_dir() and (target / "test").is_dir():
        return target
    archive = SHARED_DATA / "cifar10-jpeg.zip"
    if not archive.exists():
        raise SystemExit(f"{archive} not found: this benchmark needs ../shared/data/cifar10-jpeg.zip")
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(target)
    # the archive may hold one top-level folder around train/ and test/
    if not (target / "train").is_dir():
        inner = next(p for p in target.iterdir() if (p / "train").is_dir())
        for child in inner.iterdir():
            child.rename(target / child.name)
        inner.rmdir()
    return target


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None,
               valued: tuple[str, ...] = ()) -> argparse.Namespace:
    """``parser.parse_args()``, with every ``key=value`` word an override wherever it stands: also after a
    list option (``--only a b key=value``), which would otherwise take it as one more name. So the commands
    that the tables show, overrides after the names, run as shown. The word after an option of ``valued``
    is that option's value, '=' or not."""
    argv = sys.argv[1:] if argv is None else argv
    kept = {i + 1 for i, word in enumerate(argv) if word in valued}
    overrides = [w for i, w in enumerate(argv) if "=" in w and not w.startswith("-") and i not in kept]
    args = parser.parse_args([w for i, w in enumerate(argv)
                              if i in kept or not ("=" in w and not w.startswith("-"))])
    args.overrides = [*getattr(args, "overrides", []), *overrides]
    return args


def add_tag_argument(parser) -> None:
    """``--tag T``: the result file gets a suffix (``<name>-T.json``), so a variant keeps its own row."""
    parser.add_argument("--tag", help="suffix of the result file (<name>-<tag>.json): variants keep their rows")


def tagged(name: str, tag: str | None) -> str:
    """The result file's name for ``--tag``: ``name`` or ``name-tag``."""
    return f"{name}-{tag}" if tag else name


def tag_words(tag: str | None) -> list[str]:
    """The ``--tag`` words of the command shown in the table."""
    return [f"--tag {tag}"] if tag else []
