"""``selfsup data dedup SRC --out DIR``: exact and near duplicates of an image folder or manifest, a report and
a filtered manifest (the curation step before pre-training, as in DINOv2's pipeline: Oquab et al., "DINOv2:
Learning Robust Visual Features without Supervision", 2023, which removes near-duplicates by embedding
similarity).

Three tests, any of which makes two images duplicates (then grouped transitively, union-find):

- exact: the same decoded pixels (:func:`~selfsup.curate.hashes.content_hash`; also across file formats);
- perceptual: DCT pHash within ``phash_threshold`` bits of 64 (resized, re-encoded, lightly cropped copies; the
  hashes of centre crops too, :func:`~selfsup.curate.hashes.multi_crop_pairs`);
- embedding (with a backbone: a run, a saved backbone, or a name with ``--weights``): cosine similarity of the
  backbone's pooled features at least ``cosine``.

Each group keeps one image: a test-split image when the group has one (duplicates of evaluation images leave
the training data, not the evaluation), else the one with the most pixels, then the first path. ``DIR``
receives ``dedup_report.json`` (every group: the kept image, the dropped ones with the test and its distance)
and ``dedup_manifest.csv`` (the kept images, paths relative to ``DIR``; label, caption and split columns when
the source has them), which ``data.source=DIR/dedup_manifest.csv`` trains on. Bad files are skipped and listed.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from selfsup.data import DataError, open_data
from selfsup.data.decode import DecodeError
from selfsup.eval.evaluate import load_any_backbone
from selfsup.eval.features import extract_features
from selfsup.files import write_json_atomic
from selfsup.curate.hashes import content_hash, multi_crop_hashes, multi_crop_pairs, similar_pairs

REPORT_FILE, MANIFEST_FILE = "dedup_report.json", "dedup_manifest.csv"


@dataclass
class Item:
    """One image of the data being curated."""

    path: str  # absolute
    split: str
    label: str | None
    captions: list[str] | None
    source: object
    index: int


class Listing:
    """Items as an image source (for feature extraction): ``get_image``, ``labels`` None, a fingerprint."""

    def __init__(self, items: list[Item]):
        self.items, self.labels, self.channels = items, None, 3

    def __len__(self) -> int:
        return len(self.items)

    def get_image(self, index: int) -> torch.Tensor:
        item = self.items[index]
        return item.source.get_image(item.index)

    def fingerprint(self) -> str:
        return "|".join(item.source.fingerprint() for item in self.items[:1]) + f":{len(self.items)}"


def list_items(source_spec: str | os.PathLike) -> tuple[list[Item], list[tuple[str, str]]]:
    """Every image of a folder or manifest (train and test split), and the bad files its scan skipped."""
    splits = open_data(source_spec, holdout_fraction=0.0)
    items, bad = [], []
    for split, source in (("train", splits.train), ("test", splits.test)):
        if source is None:
            continue
        if not hasattr(source, "path"):
            raise DataError(f"{source_spec}: curation reads image files (an image folder or a manifest), not "
                            f"{type(source).__name__}")
        bad += list(source.bad_files)
        captioned = getattr(source, "captions", None) is not None
        for i in range(len(source)):
            label = source.classes[int(source.labels[i])] if source.labels is not None else None
            items.append(Item(source.path(i), split, label, source.get_text(i) if captioned else None, source, i))
    return items, bad


def embed_items(items: list[Item], backbone: str, weights: str | None = None, image_size: int | None = None,
                batch_size: int = 128) -> torch.Tensor:
    """Pooled features of every item under ``backbone`` (a run, a saved backbone or a name + ``weights``)."""
    model, meta, _ = load_any_backbone(backbone, weights)
    size = int(image_size or meta.get("image_size") or 32)
    normalization = meta.get("normalization") or {"mean": [0.5] * 3, "std": [0.25] * 3}
    features, _ = extract_features(model, Listing(items), image_size=size, mean=normalization["mean"],
                                   std=normalization["std"], batch_size=batch_size)
    return features


class _Groups:
    """Union-find over item indices."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def duplicate_edges(images: list[torch.Tensor], phash_threshold: int = 8, features: torch.Tensor | None = None,
                    cosine: float = 0.95) -> list[tuple[int, int, str, float]]:
    """(i, j, test, distance) of every duplicate pair found: ``exact`` (0), ``phash`` (bits), ``embedding``
    (cosine similarity)."""
    edges, first = [], {}
    for i, image in enumerate(images):
        key = content_hash(image)
        if key in first:
            edges.append((first[key], i, "exact", 0.0))
        else:
            first[key] = i
    hashes = [multi_crop_hashes(image) for image in images]
    edges += [(i, j, "phash", float(d)) for i, j, d in multi_crop_pairs(hashes, phash_threshold)]
    if features is not None:
        edges += [(i, j, "embedding", s) for i, j, s in similar_pairs(features, cosine)]
    return edges


def group_duplicates(n: int, edges: list[tuple[int, int, str, float]]) -> list[list[int]]:
    """The groups (of two or more items) that ``edges`` connect, each sorted, in order of their first item."""
    groups = _Groups(n)
    for i, j, _, _ in edges:
        groups.join(i, j)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(groups.find(i), []).append(i)
    return [m for _, m in sorted(members.items()) if len(m) > 1]


def _keeper(group: list[int], items: list[Item], pixels: list[int]) -> int:
    return min(group, key=lambda i: (items[i].split != "test", -pixels[i], items[i].path))


def write_manifest(path: Path, items: list[Item], extra: dict[str, list] | None = None) -> None:
    """A manifest of ``items`` (image paths relative to its folder; label / caption / split when present)."""
    labelled = any(item.label is not None for item in items)
    captioned = any(item.captions for item in items)
    split = any(item.split == "test" for item in items)
    columns = ["image", *(["label"] if labelled else []), *(["caption"] if captioned else []),
               *(["split"] if split else []), *(extra or {})]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for n, item in enumerate(items):
            base = [os.path.relpath(item.path, path.parent).replace(os.sep, "/"),
                    *([item.label] if labelled else [])]
            tail = [*([item.split] if split else []), *(values[n] for values in (extra or {}).values())]
            for caption in (item.captions or [None]) if captioned else [None]:
                writer.writerow([*base, *([caption] if captioned else []), *tail])


def dedup(source_spec: str | os.PathLike, out: str | os.PathLike, *, phash_threshold: int = 8,
          backbone: str | None = None, weights: str | None = None, cosine: float = 0.95,
          image_size: int | None = None, log=lambda message: None) -> dict:
    """Find the duplicates of ``source_spec`` and write the report and the filtered manifest under ``out``."""
    if not 0 <= phash_threshold <= 64:
        raise DataError(f"--phash-threshold must lie in 0..64 bits, not {phash_threshold}")
    items, bad = list_items(source_spec)
    images, kept_items = [], []
    for item in items:  # the scan decoded every file once; one that went bad since is a bad file too
        try:
            images.append(item.source.get_image(item.index))
            kept_items.append(item)
        except DecodeError as e:
            bad.append((item.path, str(e)))
    items = kept_items
    log(f"hashing {len(items)} images")
    features = embed_items(items, backbone, weights, image_size) if backbone else None
    edges = duplicate_edges(images, phash_threshold, features, cosine)
    groups = group_duplicates(len(items), edges)
    pixels = [int(image.shape[-1] * image.shape[-2]) for image in images]
    why = {}
    for i, j, test, distance in edges:
        why.setdefault(i, {}).setdefault(j, (test, distance))
        why.setdefault(j, {}).setdefault(i, (test, distance))
    dropped, report_groups = set(), []
    for group in groups:
        keep = _keeper(group, items, pixels)
        entries = []
        for i in group:
            if i == keep:
                continue
            dropped.add(i)
            test, distance = min(why[i].values(), key=lambda e: ("exact", "phash", "embedding").index(e[0]))
            entries.append({"path": items[i].path, "test": test, "distance": distance})
        report_groups.append({"keep": items[keep].path, "drop": entries})
    out = Path(out)
    kept = [item for i, item in enumerate(items) if i not in dropped]
    write_manifest(out / MANIFEST_FILE, kept)
    counts = {test: sum(1 for e in edges if e[2] == test) for test in ("exact", "phash", "embedding")}
    report = {"source": str(source_spec), "images": len(items), "kept": len(kept), "dropped": len(dropped),
              "groups": len(groups), "pairs": counts,
              "settings": {"phash_threshold": phash_threshold, "backbone": backbone, "weights": weights,
                           "cosine": cosine if backbone else None},
              "duplicate_groups": report_groups, "bad_files": [{"path": p, "reason": r} for p, r in bad],
              "manifest": str(out / MANIFEST_FILE)}
    write_json_atomic(out / REPORT_FILE, report)
    return report
