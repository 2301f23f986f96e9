"""Curation (selfsup.curate): `selfsup data dedup` finds planted exact and near duplicates (resized, re-encoded
JPEG, lightly cropped) with precision and recall of at least 0.95, and writes a report and a filtered manifest;
`selfsup data select` takes the pool images nearest the target set (SimCore)."""
from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.cli import main
from selfsup.curate.hashes import hamming, near_pairs, phash
from selfsup.curate.select import simcore_order
from selfsup.data import open_data


def picture(seed: int, size: int = 64) -> Image.Image:
    """A smooth random picture with a few shapes: structure at several scales, as photographs have."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    image = np.asarray(base).copy()
    for _ in range(4):
        top, left = rng.integers(0, size - 12, size=2)
        h, w = rng.integers(8, size // 2, size=2)
        image[top:top + h, left:left + w] = rng.integers(0, 256, 3)
    return Image.fromarray(image)


def plant(root: Path, originals: int = 60, seed: int = 0) -> list[set[str]]:
    """Originals, and copies of some of them: exact, resized, JPEG re-encoded, cropped. Returns the true groups."""
    rng = np.random.default_rng(seed)
    groups = []
    root.mkdir(parents=True)
    for i in range(originals):
        image = picture(1000 + i)
        image.save(root / f"orig{i:03d}.png")
        group = {f"orig{i:03d}.png"}
        if i < 36:  # 36 originals with one or two copies each
            for kind in [["exact", "resize", "jpeg", "crop"][i % 4], *(["jpeg"] if i % 3 == 0 else [])]:
                name = f"copy{i:03d}_{kind}" + (".jpg" if kind == "jpeg" else ".png")
                if kind == "exact":
                    (root / name).write_bytes((root / f"orig{i:03d}.png").read_bytes())
                elif kind == "resize":
                    image.resize((48, 48), Image.BILINEAR).save(root / name)
                elif kind == "jpeg":
                    image.save(root / name, quality=int(rng.integers(60, 90)))
                else:
                    m = int(rng.integers(2, 4))
                    image.crop((m, m, 64 - m, 64 - m)).save(root / name)
                group.add(name)
        groups.append(group)
    (root / "broken.png").write_bytes(b"\x89PNG truncated")
    return groups


def pairs_of(groups) -> set[frozenset]:
    return {frozenset(p) for g in groups for p in itertools.combinations(sorted(g), 2)}


def test_phash_is_stable_under_small_changes_and_far_between_pictures():
    a, b = picture(1), picture(2)
    ha = phash(torch.from_numpy(np.array(a)).permute(2, 0, 1))
    resized = phash(torch.from_numpy(np.array(a.resize((40, 40)))).permute(2, 0, 1))
    other = phash(torch.from_numpy(np.array(b)).permute(2, 0, 1))
    distance = lambda x, y: int(hamming(np.array([x], np.uint64), np.array([y], np.uint64))[0])  # noqa: E731
    assert distance(ha, resized) <= 4 < 16 <= distance(ha, other)
    hashes = np.array([0, 0b111, 0b1, 2 ** 63], np.uint64)
    assert near_pairs(hashes, 2) == [(0, 2, 1), (0, 3, 1), (1, 2, 2), (2, 3, 2)]


def test_dedup_finds_planted_duplicates_with_precision_and_recall(tmp_path, capsys):
    truth = pairs_of(plant(tmp_path / "pool"))
    out = tmp_path / "curated"
    assert main(["data", "dedup", str(tmp_path / "pool"), "--out", str(out)]) == 0
    assert "duplicate groups" in capsys.readouterr().out
    report = json.loads((out / "dedup_report.json").read_text())
    found = pairs_of({Path(g["keep"]).name, *(Path(d["path"]).name for d in g["drop"])}
                     for g in report["duplicate_groups"])
    precision, recall = len(found & truth) / max(1, len(found)), len(found & truth) / len(truth)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall, sorted(map(sorted, found ^ truth)))
    assert report["pairs"]["exact"] == 9 and [Path(b["path"]).name for b in report["bad_files"]] == ["broken.png"]
    # The filtered manifest keeps one image per group (never a smaller resized or cropped copy) and trains.
    rows = list(csv.DictReader(open(out / "dedup_manifest.csv")))
    assert len(rows) == report["kept"] == report["images"] - report["dropped"] and 57 <= len(rows) <= 63
    assert not any("resize" in r["image"] or "crop" in r["image"] for r in rows)
    assert len(open_data(out / "dedup_manifest.csv", holdout_fraction=0.0).train) == len(rows)


def test_dedup_with_a_backbone_adds_embedding_duplicates(tmp_path):
    plant(tmp_path / "pool", originals=8)
    out = tmp_path / "curated"
    assert main(["data", "dedup", str(tmp_path / "pool"), "--out", str(out), "--backbone", "small_resnet",
                 "--cosine", "0.9999", "--phash-threshold", "0"]) == 0
    report = json.loads((out / "dedup_report.json").read_text())
    assert report["settings"]["backbone"] == "small_resnet" and report["pairs"]["exact"] >= 1
    assert report["pairs"]["embedding"] >= report["pairs"]["exact"]  # identical pixels, identical features


def test_simcore_takes_each_targets_nearest_pool_images_in_turn():
    pool = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0], [0.8, 0.2]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    order, sims, rounds = simcore_order(pool, target, 4)
    assert order == [0, 2, 1, 3] and rounds == [0, 0, 1, 1] and sims[0] == pytest.approx(1.0)
    assert 4 not in simcore_order(pool, target, 5)[0]


def test_data_select_writes_a_manifest_of_the_pool_near_the_target(tmp_path, capsys):
    for name, colour, count in (("pool/red", (220, 30, 30), 12), ("pool/blue", (30, 30, 220), 12),
                                ("target", (230, 40, 20), 3)):
        (tmp_path / name).mkdir(parents=True)
        for i in range(count):
            rng = np.random.default_rng(i + len(name))
            pixels = np.clip(np.array(colour) + rng.normal(0, 12, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    out = tmp_path / "coreset.csv"
    assert main(["data", "select", str(tmp_path / "pool"), "--target", str(tmp_path / "target"), "--count", "8",
                 "--out", str(out), "--backbone", "small_resnet", "--image-size", "16"]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 8 and sum(r["label"] == "red" for r in rows) >= 7, rows
    assert "selected 8 of 24" in capsys.readouterr().out
