"""The parts folder of a resumable embedding (:mod:`selfsup.export.embeddings`), and the merge that ends it.

``<out>.parts/`` holds ``files.json`` (the sorted file list fixed at start, with sizes and mtimes),
``manifest.json`` (its digest, the chunk size and the settings the rows depend on; written last, so a folder
without it holds nothing usable), ``stats.json`` (a raw folder's pixel statistics when they were measured at
start) and ``chunk-<k>.npz`` (each chunk's file indices, rows, and bad files with their reasons), every file
written atomically (:mod:`selfsup.files`). A chunk is there complete or not at all, so a resume redoes at most
the chunk that was running.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfsup.data.badfiles import write_bad_files
from selfsup.data.stats import DatasetStats, save_stats
from selfsup.export.embedding_formats import format_of, paths_file
from selfsup.files import atomic_path, write_json_atomic

PARTS_FORMAT = "selfsup-embedding-parts-v1"
_OWN_FILES = ("manifest.json", "files.json", "stats.json")
_SETTING_WORDS = {"weights_sha256": "backbone weights", "spec": "backbone architecture", "image_size": "image size",
                  "mean": "normalisation", "std": "normalisation", "pixels": "pixel mode", "window": "pixel window",
                  "dtype": "pixel dtype", "precision": "precision"}


class ResumeRefused(ValueError):
    """An interrupted embedding cannot continue: its folder's files, its backbone or its input settings changed."""


def parts_dir(out: str | os.PathLike) -> Path:
    return Path(f"{out}.parts")


def bad_files_path(out: str | os.PathLike) -> Path:
    return Path(f"{out}.bad_files.txt")


@dataclass
class FolderFiles:
    """The image files under ``root`` at start: sorted relative paths, their sizes and mtimes (what a resume checks)."""

    root: Path
    paths: list[str]
    sizes: list[int]
    mtimes: list[int]
    raw: bool
    ignored: int  # files with an extension the pixel mode does not read

    def to_json(self) -> dict:
        return {"paths": self.paths, "sizes": self.sizes, "mtimes": self.mtimes}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json()).encode()).hexdigest()

    def changes_since(self, old: dict) -> str:
        """What differs from an earlier :meth:`to_json`: added, removed and changed files, with examples."""
        before = {p: (s, m) for p, s, m in zip(old["paths"], old["sizes"], old["mtimes"])}
        now = {p: (s, m) for p, s, m in zip(self.paths, self.sizes, self.mtimes)}
        kinds = {"added": sorted(set(now) - set(before)), "removed": sorted(set(before) - set(now)),
                 "changed": sorted(p for p in set(now) & set(before) if now[p] != before[p])}
        said = [f"{len(names)} {kind} (e.g. {', '.join(names[:2])})" for kind, names in kinds.items() if names]
        return ", ".join(said) or "the file list differs"


def clear_parts(parts: Path) -> None:
    """Remove what this module writes in ``parts`` (chunks, lists, temporary files), then the folder if empty.
    The manifest goes first: without it the folder means nothing, so a kill in between leaves no half state."""
    if not parts.is_dir():
        return
    (parts / "manifest.json").unlink(missing_ok=True)
    for path in parts.iterdir():
        if path.name in _OWN_FILES or path.name.startswith(("chunk-", ".")):
            path.unlink()
    if not any(parts.iterdir()):
        parts.rmdir()


def previous_run(parts: Path, out: Path, files: FolderFiles, restart: bool) -> dict | None:
    """The manifest of an interrupted run over the same files, or None to start afresh (``restart``, or none)."""
    if restart:
        clear_parts(parts)
        return None
    manifest = json.loads((parts / "manifest.json").read_text()) if (parts / "manifest.json").is_file() else None
    if manifest is None:
        clear_parts(parts)  # a start that ended before its manifest landed: nothing of it is usable
        if out.exists():
            raise FileExistsError(f"{out} already exists (a finished embedding); pass --restart to compute it again "
                                  "and replace it, or choose another --out")
        return None
    if manifest.get("format") != PARTS_FORMAT:
        raise ResumeRefused(f"{parts} was written by another version ({manifest.get('format')}); pass --restart")
    if manifest["files"] != files.digest():
        old = json.loads((parts / "files.json").read_text())
        raise ResumeRefused(
            f"{files.root} changed since the interrupted embedding in {parts} began ({files.changes_since(old)}); "
            "restore the files to continue, or pass --restart to start over (its finished chunks are discarded)")
    return manifest


def start_parts(parts: Path, files: FolderFiles, settings: dict, chunk_files: int, previous: dict | None,
                measured: DatasetStats | None) -> int:
    """Check an interrupted run's settings, or write the parts' lists and manifest; returns the chunk size."""
    if previous is not None:
        changed = dict.fromkeys(_SETTING_WORDS.get(key, key) for key in settings
                                if previous["settings"].get(key) != settings[key])
        if changed:
            raise ResumeRefused(f"the interrupted embedding in {parts} used another {', '.join(changed)} (the "
                                "backbone or its input settings changed); rerun with the same backbone and options "
                                "to continue, or pass --restart to start over")
        return int(previous["chunk_files"])
    parts.mkdir(parents=True, exist_ok=True)
    write_json_atomic(parts / "files.json", files.to_json(), indent=None)
    if measured is not None:
        save_stats(measured, parts / "stats.json")
    write_json_atomic(parts / "manifest.json", {"format": PARTS_FORMAT, "files": files.digest(),
                                                "count": len(files.paths), "chunk_files": chunk_files,
                                                "settings": settings})
    return chunk_files


def chunk_path(parts: Path, index: int) -> Path:
    return parts / f"chunk-{index:06d}.npz"


def write_chunk(path: Path, rows: list[tuple[np.ndarray, np.ndarray]], bad: list[tuple[int, str]], dims: int,
                dtype) -> None:
    """One chunk's ``(file indices, rows)`` batches and its ``(file index, reason)`` bad files, atomically."""
    indices = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int64)
    vectors = np.concatenate([r[1] for r in rows]) if rows else np.zeros((0, dims), dtype)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, indices=indices, embeddings=vectors, bad_indices=np.array([b[0] for b in bad], np.int64),
                 bad_reasons=np.array([b[1] for b in bad], dtype=str))


def merge_parts(out: Path, parts: Path, files: FolderFiles, chunks: int, dims: int, dtype,
                metadata: dict) -> tuple[int, int, int]:
    """Write ``out`` (and its sidecars) from the chunks in file order; returns ``(rows, dims, bad files)``."""
    rows, bad = 0, []
    for index in range(chunks):
        with np.load(chunk_path(parts, index), allow_pickle=False) as z:
            rows += len(z["indices"])
            dims = z["embeddings"].shape[1] if z["embeddings"].shape[0] else dims
            bad += [(files.paths[i], str(reason))
                    for i, reason in zip(z["bad_indices"].tolist(), z["bad_reasons"].tolist())]
    fmt, written = format_of(out), []
    with atomic_path(out) as tmp:
        writer = fmt(tmp, rows=rows, dims=dims, dtype=np.dtype(dtype), metadata=metadata)
        try:
            for index in range(chunks):
                with np.load(chunk_path(parts, index), allow_pickle=False) as z:
                    paths = [files.paths[i] for i in z["indices"].tolist()]
                    writer.write(paths, z["embeddings"])
                    written += paths
        finally:
            writer.close()
    if fmt.paths_sidecar:
        with atomic_path(paths_file(out)) as tmp:
            tmp.write_text("".join(f"{path}\n" for path in written), encoding="utf-8")
    if bad:
        with atomic_path(bad_files_path(out)) as tmp:
            write_bad_files(bad, tmp)
    elif bad_files_path(out).exists():  # an earlier embedding's list
        bad_files_path(out).unlink()
    clear_parts(parts)
    return rows, dims, len(bad)
