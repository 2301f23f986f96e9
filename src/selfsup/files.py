"""Atomic file writes: a crash, a kill or a full disk leaves the old file or the new one, never half of one.

The one primitive is :func:`atomic_path`: write to a temporary file in the same folder (so the rename never
crosses file systems), fsync it, ``os.replace`` it onto the target, then fsync the folder so the rename
itself survives a power loss. On any error the temporary file is removed and the target is untouched.
Readers therefore never see a partial file, and concurrent writers of the same target never share a
temporary file (its name is unique).

A leaf module: it imports nothing of selfsup.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder, so that a rename inside it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _new_temp(path: Path) -> Path:
    """Create an empty, uniquely named, hidden file next to ``path``, with the permissions of a plain open()."""
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            # 0o666 under the umask, as open(path, "w") would give (tempfile.mkstemp would give 0o600)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` to write; when the block ends without error, fsync it,
    rename it onto ``path`` and fsync the folder. The folder is created when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | os.PathLike, data: str | bytes, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text in ``encoding``, or bytes) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding=encoding)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """``obj`` as JSON (``indent`` spaces, or one line when None, then a newline when indented), atomically.

    The JSON is made before anything is written, so an object that cannot be serialized leaves no file."""
    text = json.dumps(obj, indent=indent) + ("\n" if indent is not None else "")
    return write_atomic(path, text)


def copy_file_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy the contents of ``src`` to ``dst`` atomically; returns ``dst``."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)
