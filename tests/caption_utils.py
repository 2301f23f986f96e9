"""Writers of one set of image-text pairs in every layout the data package reads (a caption folder, CSV and
JSONL manifests, tar shards), for tests/test_data_captions.py and tests/test_data_shards.py."""
from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image


class Pair(NamedTuple):
    path: str  # relative, posix: the folder path, the manifest's image column, the shard member name
    captions: list[str]
    label: str | None = None


def pixels(index: int, size: tuple[int, int] = (10, 12)) -> np.ndarray:
    return np.random.default_rng(index).integers(0, 256, (*size, 3), dtype=np.uint8)


def png_bytes(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels(index)).save(buffer, "PNG")  # lossless: every layout decodes the same pixels
    return buffer.getvalue()


def make_pairs(n: int, labelled: bool = True, classes: int = 2) -> list[Pair]:
    """n pairs with 1-3 captions each; labelled ones live in class folders "0", "1", ..."""
    pairs = []
    for i in range(n):
        label = str(i % classes) if labelled else None
        name = f"{label}/img{i:02d}.png" if labelled else f"img{i:02d}.png"
        pairs.append(Pair(name, [f"caption {j} of image {i}" for j in range(1 + i % 3)], label))
    return pairs


def write_images(root: Path, pairs: list[Pair]) -> None:
    for i, pair in enumerate(pairs):
        path = root / pair.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(i))


def write_caption_folder(root: Path, pairs: list[Pair]) -> Path:
    write_images(root, pairs)
    for pair in pairs:
        (root / pair.path).with_suffix(".txt").write_text("\n".join(pair.captions) + "\n")
    return root


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def manifest_rows(pairs: list[Pair]) -> list[dict]:
    """One row per caption (the CSV way of giving several)."""
    return [{"image": p.path, "caption": c, **({"label": p.label} if p.label is not None else {})}
            for p in pairs for c in p.captions]


def write_jsonl(path: Path, records: list[dict | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(folder: Path, pairs: list[Pair], per_shard: int = 3, images: dict[int, bytes] | None = None) -> Path:
    """Shards of ``per_shard`` pairs in the webdataset layout (image, .txt, .cls, a .json that is ignored);
    ``images`` replaces the bytes of some pairs' images."""
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(pairs), per_shard):
        with tarfile.open(folder / f"shard-{start // per_shard:04d}.tar", "w") as tar:
            for i in range(start, min(start + per_shard, len(pairs))):
                pair = pairs[i]
                key = pair.path.rsplit(".", 1)[0]
                add_member(tar, pair.path, (images or {}).get(i, png_bytes(i)))
                add_member(tar, f"{key}.txt", "\n".join(pair.captions).encode())
                if pair.label is not None:
                    add_member(tar, f"{key}.cls", pair.label.encode())
                add_member(tar, f"{key}.json", json.dumps({"index": i}).encode())
    return folder
