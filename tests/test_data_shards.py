"""Tar shards of image-text pairs (selfsup.data.shards), and one set of pairs read from every layout: a caption
manifest, a caption folder and tar shards give the same images, captions and labels in the same order (by
the image's relative path / member name)."""
from __future__ import annotations

import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from caption_utils import (
    add_member,
    make_pairs,
    manifest_rows,
    pixels,
    png_bytes,
    write_caption_folder,
    write_csv,
    write_jsonl,
    write_shards,
)
from selfsup.data import DataError, DecodeError, ShardSource, has_text, open_data
from selfsup.data.splits import subset
from selfsup.fields import IMAGE_TEXT_FIELDS


def image_of(index: int) -> torch.Tensor:
    return torch.from_numpy(pixels(index)).permute(2, 0, 1)


def everything(splits) -> list[tuple[str, list[str], str | None, torch.Tensor]]:
    """(name, captions, class name, image) of every sample, train then test, in source order."""
    out = []
    for source in (splits.train, splits.test):
        for i in range(len(source) if source is not None else 0):
            name = source.relpath(i) if hasattr(source, "relpath") else source.member(i).rsplit(":", 1)[1]
            label = None if source.labels is None else source.classes[source.labels[i]]
            out.append((name, source.get_text(i), label, source.get_image(i)))
    return out


def test_shards_random_access_captions_and_labels(tmp_path):
    pairs = make_pairs(10, classes=2)
    folder = write_shards(tmp_path / "shards", pairs, per_shard=4)
    splits = open_data(folder, holdout_fraction=0.2, seed=0)
    train, test = splits.train, splits.test
    assert isinstance(train, ShardSource) and train.fields == IMAGE_TEXT_FIELDS and has_text(test)
    assert len(train) == 8 and len(test) == 2 and train.classes == ["0", "1"] and sorted(test.labels) == [0, 1]
    by_name = {p.path: (i, p) for i, p in enumerate(pairs)}
    for source in (train, test):
        for i in reversed(range(len(source))):  # random access, any order
            shard, member = source.member(i).rsplit(":", 1)
            index, pair = by_name[member]
            assert shard == str(folder / f"shard-{index // 4:04d}.tar")
            assert torch.equal(source.get_image(i), image_of(index)) and source.get_text(i) == pair.captions
            assert source.classes[source.labels[i]] == pair.label
    assert train.get_image(-1).shape == (3, 10, 12) and train.get_image(0).dtype == torch.uint8
    with pytest.raises(IndexError):
        train.get_image(8)
    gray = open_data(folder, channels=1, holdout_fraction=0.0).train
    assert gray.get_image(0).shape == (1, 10, 12) and gray.fingerprint() != open_data(folder).train.fingerprint()
    one = open_data(folder / "shard-0001.tar", holdout_fraction=0.0).train  # a single .tar
    assert len(one) == 4 and one.get_text(0) == pairs[4].captions and one.name == "shard-0001"


def test_shard_sources_pickle_cheaply_and_fingerprint_their_files(tmp_path):
    folder = write_shards(tmp_path / "shards", make_pairs(30, labelled=False), per_shard=10)
    train = open_data(folder, holdout_fraction=0.0).train
    blob = pickle.dumps(train)
    clone = pickle.loads(blob)
    assert len(blob) < 8000  # an index, not pixels
    assert clone.fingerprint() == train.fingerprint() and len(clone) == 30
    assert all(torch.equal(clone.get_image(i), train.get_image(i)) for i in (0, 17, 29))
    assert [clone.get_text(i) for i in range(30)] == [train.get_text(i) for i in range(30)]
    assert open_data(folder, holdout_fraction=0.0).train.fingerprint() == train.fingerprint()
    os.utime(folder / "shard-0002.tar", ns=(1_000_000_000, 1_000_000_000))
    assert open_data(folder, holdout_fraction=0.0).train.fingerprint() != train.fingerprint()
    part = subset(train, np.array([5, 2]), "part")
    assert isinstance(part, ShardSource) and part.get_text(0) == train.get_text(5) and part.name == "part"
    assert torch.equal(part.get_image(1), train.get_image(2))
    splits = open_data(folder, holdout_fraction=0.2, seed=3)  # unlabelled pairs: a random held-out fifth
    assert len(splits.test) == 6 and splits.test.labels is None and splits.test.name == "shards/holdout"


def test_bad_members_are_skipped_and_named(tmp_path):
    pairs = make_pairs(12, classes=3)
    folder = write_shards(tmp_path / "shards", pairs, per_shard=12, images={3: b"garbage bytes"})
    with tarfile.open(folder / "shard-0001.tar", "w") as tar:
        add_member(tar, "x/only-text.txt", b"a caption without its image")
        add_member(tar, "x/nocap.png", png_bytes(0))
        add_member(tar, "x/empty.png", png_bytes(1))
        add_member(tar, "x/empty.txt", b" \n")
        add_member(tar, "x/badcls.png", png_bytes(2))
        add_member(tar, "x/badcls.txt", b"fine")
        add_member(tar, "x/badcls.cls", b"seven")
        add_member(tar, "x/nocls.png", png_bytes(3))
        add_member(tar, "x/nocls.txt", b"fine")
        add_member(tar, "x/._hidden.png", b"AppleDouble junk is skipped, never reported")
    (folder / "shard-0002.tar").write_bytes(b"\x1f\x8b" + b"not a plain tar" * 40)  # e.g. a .tar.gz in disguise
    splits = open_data(folder, max_bad_fraction=0.5, holdout_fraction=0.0)
    assert len(splits.train) == 11
    bad = dict(splits.train.bad_files)
    shard0, shard1 = folder / "shard-0000.tar", folder / "shard-0001.tar"
    assert "not a recognised image" in bad[f"{shard0}:0/img03.png"]
    assert "no image member" in bad[f"{shard1}:x/only-text"]
    assert bad[f"{shard1}:x/nocap.png"] == "no caption: nocap.txt is missing"
    assert bad[f"{shard1}:x/empty.png"] == "no caption: empty.txt is empty"
    assert "badcls.cls is not a non-negative integer: 'seven'" in bad[f"{shard1}:x/badcls.png"]
    assert "nocls.cls is missing" in bad[f"{shard1}:x/nocls.png"]
    assert "plain, uncompressed .tar" in bad[str(folder / "shard-0002.tar")]
    assert len(bad) == 7
    with pytest.raises(DataError, match="7 of 18 shard items .* in the shards .* could not be used"):
        open_data(folder)


def test_a_member_that_goes_bad_after_the_scan_names_itself(tmp_path):
    folder = write_shards(tmp_path / "shards", make_pairs(3, labelled=False), per_shard=3)
    source = open_data(folder, holdout_fraction=0.0).train
    shard = folder / "shard-0000.tar"
    data = bytearray(shard.read_bytes())
    start = data.find(png_bytes(1))
    data[start:start + 64] = bytes(64)  # the same size, broken bytes
    shard.write_bytes(bytes(data))
    with pytest.raises(DecodeError) as info:
        source.get_image(1)
    assert info.value.path == f"{shard}:img01.png"
    shard.write_bytes(bytes(data[:start]))  # truncated
    with pytest.raises(DecodeError, match="truncated member") as info:
        source.get_image(2)
    assert info.value.path.endswith(":img02.png")


def test_shard_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with tarfile.open(tmp_path / "empty" / "a.tar", "w"):
        pass
    with pytest.raises(DataError, match="hold no members"):
        open_data(tmp_path / "empty")
    with pytest.raises(DataError, match="channels=2"):
        open_data(tmp_path / "empty", channels=2)


@pytest.mark.parametrize("labelled", [True, False])
def test_manifest_folder_and_shards_of_the_same_pairs_agree(tmp_path, labelled):
    pairs = make_pairs(9, labelled=labelled, classes=3)
    pairs.append(pairs[0]._replace(path=pairs[0].path.replace("img00", "img00-b")))  # '-' sorts before '.'
    folder = write_caption_folder(tmp_path / "folder", pairs)
    in_folder = [p._replace(path=f"folder/{p.path}") for p in pairs]  # manifests beside the folder
    csv_manifest = write_csv(tmp_path / "pairs.csv", manifest_rows(in_folder))
    jsonl_manifest = write_jsonl(tmp_path / "pairs.jsonl",
                                 [{"image": p.path, "caption": p.captions, "label": p.label} for p in in_folder])
    shards = write_shards(tmp_path / "shards", pairs, per_shard=4)
    layouts = [open_data(path, holdout_fraction=0.3, seed=2) for path in (folder, csv_manifest, jsonl_manifest,
                                                                          shards)]
    samples = [[(name.removeprefix("folder/"), *rest) for name, *rest in everything(splits)] for splits in layouts]
    reference = samples[0]
    assert len(reference) == 10 and len({name for name, *_ in reference}) == 10
    for other in samples[1:]:
        assert [s[:3] for s in other] == [s[:3] for s in reference]
        assert all(torch.equal(a[3], b[3]) for a, b in zip(other, reference))  # pixel-equal
    by_name = {p.path: (i, p) for i, p in enumerate(pairs)}
    for name, captions, label, image in reference:
        index, pair = by_name[name]
        assert captions == pair.captions and label == pair.label and torch.equal(image, image_of(index))
    train_names = [name for name, *_ in reference[:len(layouts[0].train)]]
    assert train_names == sorted(train_names)  # the documented order: by relative path / member name
    assert all(len(splits.test) == 3 and (splits.test.labels is None) == (not labelled) for splits in layouts)
