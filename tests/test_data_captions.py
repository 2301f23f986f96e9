"""Image-text data: captions on sources, caption manifests (CSV, JSONL, parquet), caption folders (.txt
sidecars), the decoded cache of a caption folder, and the embedded digits-captions set."""
from __future__ import annotations

import importlib.util
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from caption_utils import make_pairs, manifest_rows, pixels, write_caption_folder, write_csv, write_images, write_jsonl
from selfsup.data import ArraySource, DataError, FolderSource, has_text, open_data
from selfsup.data.cache import open_cached
from selfsup.data.digits_captions import CLASS_WORDS
from selfsup.data.splits import subset
from selfsup.fields import IMAGE_FIELDS, IMAGE_TEXT_FIELDS

HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None
# open_digits().train.fingerprint() (and .test's): the images must not change with digits-captions, nor between
# CPUs. Rendered in float64 since 2026-12-02: in float32, MKL's AVX-512 matmul (affine_grid on Intel CPUs) moved a
# few pixels across the uint8 rounding (an Intel Xeon drew other train images than an AMD EPYC, which MKL serves
# with its AVX2 kernels; MKL_ENABLE_INSTRUCTIONS=AVX2 reproduced the AMD images there); float64 draws the same
# images under MKL's SSE4.2, AVX2 and AVX-512 kernels.
DIGITS_FINGERPRINTS = ("0735703c2e12aa33", "294c677ee5bdfe2c")
DIGITS_PLAIN_FINGERPRINTS = ("5ee92e1456209a12", "1b6669003dfdd253")


def images(n: int) -> np.ndarray:
    return np.stack([pixels(i).transpose(2, 0, 1) for i in range(n)])


def captions_of(source) -> list[list[str]]:
    return [source.get_text(i) for i in range(len(source))]


# ------------------------------------------------------------------------------------------ sources


def test_array_source_with_captions():
    plain = ArraySource(images(4), labels=[0, 1, 0, 1])
    assert plain.fields == IMAGE_FIELDS and not has_text(plain)
    with pytest.raises(DataError, match="has no captions"):
        plain.get_text(0)
    source = ArraySource(images(4), labels=[0, 1, 0, 1],
                         captions=["  a  cat\n on a mat ", ["one", "", "two\tthree"], "x", ("y", "z")])
    assert source.fields == IMAGE_TEXT_FIELDS and has_text(source) and ArraySource.fields == IMAGE_FIELDS
    assert captions_of(source) == [["a cat on a mat"], ["one", "two three"], ["x"], ["y", "z"]]
    assert source.get_text(-1) == ["y", "z"]
    with pytest.raises(IndexError):
        source.get_text(4)
    assert source.fingerprint() != plain.fingerprint()
    assert source.fingerprint() != ArraySource(images(4), labels=[0, 1, 0, 1], captions=list("abcd")).fingerprint()
    assert plain.fingerprint() == ArraySource(images(4), labels=[0, 1, 0, 1]).fingerprint()  # unchanged without
    part = subset(source, np.array([3, 1]), "part")
    assert captions_of(part) == [["y", "z"], ["one", "two three"]] and part.labels.tolist() == [1, 1]
    clone = pickle.loads(pickle.dumps(source))
    assert captions_of(clone) == captions_of(source) and clone.fingerprint() == source.fingerprint()
    assert clone.fields == IMAGE_TEXT_FIELDS


def test_bad_captions_on_sources_raise_clear_errors(tmp_path):
    with pytest.raises(DataError, match="3 caption entries for 4 images"):
        ArraySource(images(4), captions=["a", "b", "c"])
    with pytest.raises(DataError, match="2 image.*without a non-empty caption.*index 1"):
        ArraySource(images(3), captions=["a", "  ", [""]])
    with pytest.raises(TypeError, match="must be a string"):
        ArraySource(images(1), captions=[[3]])
    write_images(tmp_path, make_pairs(2, labelled=False))
    folder = FolderSource(tmp_path, ["img00.png", "img01.png"], captions=["a", ["b", "c"]])
    assert has_text(folder) and captions_of(pickle.loads(pickle.dumps(folder))) == [["a"], ["b", "c"]]
    assert folder.fingerprint() != FolderSource(tmp_path, ["img00.png", "img01.png"]).fingerprint()


# ------------------------------------------------------------------------------------------ manifests


def test_csv_manifest_merges_rows_sorts_by_image_and_holds_out_per_class(tmp_path):
    pairs = make_pairs(12, classes=2)
    write_images(tmp_path, pairs)
    rows = manifest_rows(pairs[::-1])  # samples are sorted by image path; an image's captions keep row order
    splits = open_data(write_csv(tmp_path / "pairs.csv", rows), holdout_fraction=0.25, seed=1)
    train, test = splits.train, splits.test
    assert isinstance(train, FolderSource) and has_text(train) and has_text(test)
    assert len(train) + len(test) == 12 and len(test) == 4 and train.classes == ["0", "1"]
    by_path = {p.path: p for p in pairs}
    for source in (train, test):
        paths = [source.relpath(i) for i in range(len(source))]
        assert paths == sorted(paths)
        for i, path in enumerate(paths):
            assert source.get_text(i) == by_path[path].captions
            assert source.classes[source.labels[i]] == by_path[path].label
            assert torch.equal(source.get_image(i), torch.from_numpy(pixels(int(path[-6:-4]))).permute(2, 0, 1))
    assert sorted(test.labels.tolist()) == [0, 0, 1, 1] and test.name == "pairs/holdout"
    clone = pickle.loads(pickle.dumps(train))
    assert captions_of(clone) == captions_of(train) and clone.fingerprint() == train.fingerprint()


def test_manifest_bad_rows_are_skipped_and_reported(tmp_path):
    pairs = make_pairs(20, classes=2)
    write_images(tmp_path, pairs)
    (tmp_path / "0" / "img00.png").write_bytes(b"not a png at all")  # undecodable
    (tmp_path / "1" / "img01.png").unlink()  # missing
    rows = manifest_rows(pairs)
    first = len(rows) + 2  # the line of the first appended row (line 1 is the header)
    rows.append({"image": "0/img02.png", "caption": "   ", "label": "0"})  # empty caption (the image has others)
    rows.append({"image": "0/img04.png", "caption": "another", "label": "1"})  # contradicts the earlier label
    rows.append({"image": "", "caption": "no image", "label": "0"})
    rows.append({"image": "1/img03.png", "caption": "unlabelled row", "label": ""})
    manifest = write_csv(tmp_path / "m.csv", rows)
    splits = open_data(manifest, max_bad_fraction=0.5, holdout_fraction=0.2)
    bad = dict(splits.train.bad_files)
    assert len(splits.train) + len(splits.test) == 18
    assert re.search("not a recognised image", bad[str(tmp_path / "0" / "img00.png")])
    assert "cannot stat" in bad[str(tmp_path / "1" / "img01.png")]
    lines = {int(place.rsplit("line ", 1)[1]) - first: reason for place, reason in bad.items() if ", line " in place}
    assert set(lines) == {0, 1, 2, 3} and all(p.startswith(f"{manifest}, line ") for p in bad if ", line " in p)
    assert "empty caption" in lines[0] and "differs" in lines[1] and "no image path" in lines[2]
    assert "no label" in lines[3]
    texts = {s.relpath(i): s.get_text(i) for s in (splits.train, splits.test) for i in range(len(s))}
    assert texts["0/img02.png"] == pairs[2].captions and texts["0/img04.png"] == pairs[4].captions
    with pytest.raises(DataError) as info:
        open_data(manifest, max_bad_fraction=0.1)
    assert "6 of 24 manifest items" in str(info.value) and "data.max_bad_fraction" in str(info.value)


def test_jsonl_manifest_caption_lists_integer_labels_and_split_column(tmp_path):
    pairs = make_pairs(6, classes=3)
    write_images(tmp_path / "data", pairs)
    records = [{"filepath": f"data/{p.path}", "text": p.captions, "label": int(p.label),
                "split": "val" if i % 3 == 0 else "train"} for i, p in enumerate(pairs)]
    records += ["{not json", "[1, 2]", {"filepath": "data/0/img00.png", "text": "x", "label": 0, "split": "dev"}]
    records.append({"filepath": "data/1/img01.png", "text": 7, "label": 1, "split": "train"})
    splits = open_data(write_jsonl(tmp_path / "pairs.jsonl", records), max_bad_fraction=0.5)
    train, test = splits.train, splits.test
    assert train.classes == ["0", "1", "2"] and len(train) == 4 and len(test) == 2 and test.name == "pairs/test"
    assert [test.relpath(i) for i in range(2)] == ["data/0/img00.png", "data/0/img03.png"]
    assert test.get_text(1) == pairs[3].captions and test.labels.tolist() == [0, 0]
    reasons = [reason for _, reason in train.bad_files]
    assert len(reasons) == 4 and "not valid JSON" in reasons[0] and "not a JSON object" in reasons[1]
    assert "'dev' is none of train, test, val" in reasons[2] and "is not text" in reasons[3]


def test_unlabelled_pairs_get_a_random_held_out_test_split(tmp_path):
    pairs = make_pairs(10, labelled=False)
    write_images(tmp_path, pairs)
    manifest = write_csv(tmp_path / "pairs.csv", manifest_rows(pairs))
    splits = open_data(manifest, holdout_fraction=0.3, seed=4)
    assert splits.train.labels is None and splits.test.labels is None and splits.test.classes is None
    assert len(splits.train) == 7 and len(splits.test) == 3 and has_text(splits.test)
    held = {splits.test.relpath(i) for i in range(3)}
    assert held.isdisjoint(splits.train.relpath(i) for i in range(7))
    assert held == {open_data(manifest, holdout_fraction=0.3, seed=4).test.relpath(i) for i in range(3)}
    assert held != {open_data(manifest, holdout_fraction=0.3, seed=5).test.relpath(i) for i in range(3)}
    assert open_data(manifest, holdout_fraction=0.0).test is None


def test_manifest_errors_name_the_problem(tmp_path):
    write_images(tmp_path, make_pairs(2, labelled=False))
    with pytest.raises(DataError, match=r"needs an image column \(image, filepath, file_name, path\).* caption, file"):
        # (a .csv or .parquet without an image column is a table since issue 20: selfsup.data.kind_open)
        open_data(write_jsonl(tmp_path / "a.jsonl", [{"file": "img00.png", "caption": "x"}]))
    # Without a caption column it is a plain image manifest (tests/test_data_stream.py).
    assert not has_text(open_data(write_csv(tmp_path / "b.csv", [{"image": "img00.png", "tag": "x"}])).train)
    (tmp_path / "c.csv").write_text("image,caption\n")
    with pytest.raises(DataError, match="no rows"):
        open_data(tmp_path / "c.csv")
    with pytest.raises(DataError, match="(?s)every manifest item .* could not be used.*empty caption"):
        open_data(write_csv(tmp_path / "d.csv", [{"image": "img00.png", "caption": ""}]), max_bad_fraction=1.0)
    with pytest.raises(DataError, match="no usable rows of the train split"):
        open_data(write_csv(tmp_path / "e.csv", [{"image": "img00.png", "caption": "x", "split": "test"}]))


@pytest.mark.skipif(not HAS_PYARROW, reason="pyarrow (the parquet extra) is not installed")
def test_parquet_manifest(tmp_path):
    import pyarrow as pa  # optional: only this test needs it
    import pyarrow.parquet as pq

    pairs = make_pairs(5, labelled=False)
    write_images(tmp_path, pairs)
    table = pa.table({"file_name": [p.path for p in pairs], "caption": [p.captions for p in pairs]})
    pq.write_table(table, tmp_path / "pairs.parquet")
    splits = open_data(tmp_path / "pairs.parquet", holdout_fraction=0.0)
    assert captions_of(splits.train) == [p.captions for p in pairs] and splits.test is None


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow.parquet` fail as if absent
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "pairs.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"needs pyarrow; install the parquet extra \(pip install 'selfsup\[parquet\]"):
        open_data(tmp_path / "pairs.parquet")


# ------------------------------------------------------------------------------------------ caption folders


def test_caption_folder_with_classes_and_bad_sidecars(tmp_path):
    pairs = make_pairs(12, classes=2)
    root = write_caption_folder(tmp_path / "pairs", pairs)
    (root / "0" / "img00.txt").unlink()
    (root / "1" / "img01.txt").write_text(" \n\n")
    (root / "notes.txt").write_text("an ignored file")
    splits = open_data(root, holdout_fraction=0.2, max_bad_fraction=0.2)
    train = splits.train
    assert has_text(train) and has_text(splits.test) and train.classes == ["0", "1"]
    assert len(train) + len(splits.test) == 10 and train.ignored_files == 1  # notes.txt; sidecars are no files
    reasons = {Path(p).name: r for p, r in train.bad_files}
    assert reasons == {"img00.png": "no caption: img00.txt is missing", "img01.png": "no caption: img01.txt is empty"}
    by_path = {p.path: p.captions for p in pairs}
    assert all(s.get_text(i) == by_path[s.relpath(i)] for s in (train, splits.test) for i in range(len(s)))
    with pytest.raises(DataError, match="2 of 12 image files .* under .* could not be decoded or have no caption"):
        open_data(root, max_bad_fraction=0.1)


def test_folder_without_sidecars_stays_an_image_folder(tmp_path):
    root = tmp_path / "images"
    write_images(root, make_pairs(4, labelled=False))
    (root / "readme.txt").write_text("not a caption: no image has this stem")
    splits = open_data(root)
    assert splits.train.fields == IMAGE_FIELDS and not has_text(splits.train) and splits.test is None
    assert splits.train.ignored_files == 1


def test_caption_folder_split_folders_keep_unlabelled_test_pairs(tmp_path):
    write_caption_folder(tmp_path / "d" / "train", make_pairs(4, labelled=False))
    write_caption_folder(tmp_path / "d" / "test", make_pairs(2, labelled=False))
    splits = open_data(tmp_path / "d")
    assert len(splits.train) == 4 and len(splits.test) == 2 and splits.test.labels is None
    assert splits.test.get_text(1) == make_pairs(2, labelled=False)[1].captions


def test_decoded_cache_keeps_the_captions(tmp_path):
    root = write_caption_folder(tmp_path / "pairs", make_pairs(5, labelled=False))
    train = open_data(root, holdout_fraction=0.0).train
    for _ in range(2):  # built, then reused
        cached = open_cached(train, image_size=8, cache_size=None, runs_dir=tmp_path / "runs", log=lambda _: None)
        assert has_text(cached) and captions_of(cached) == captions_of(train)


# ------------------------------------------------------------------------------------------ digits-captions


def test_digits_captions():
    splits = open_data("digits-captions")
    train, test = splits.train, splits.test
    assert len(train) == 5000 and len(test) == 1000 and train.fields == IMAGE_TEXT_FIELDS and has_text(test)
    assert train.classes == [str(i) for i in range(10)] and train.class_words == CLASS_WORDS
    assert all("{}" in t for t in train.zero_shot_templates) and test.zero_shot_templates == train.zero_shot_templates
    assert train.flips_preserve_labels is False
    digits = open_data("digits")
    assert np.array_equal(test.images, digits.test.images) and np.array_equal(test.labels, digits.test.labels)
    numbers = re.compile(r"\b(" + "|".join([*CLASS_WORDS, *map(str, range(10))]) + r")\b")
    for source in (train, test):
        for i in range(0, len(source), 7):
            captions, label = source.get_text(i), int(source.labels[i])
            assert 4 <= len(captions) <= 6 and len(set(captions)) == len(captions)
            for caption in captions:  # the right digit, and no other
                assert set(numbers.findall(caption)) <= {str(label), CLASS_WORDS[label]}, caption
                assert numbers.search(caption), caption
    words = " ".join(" ".join(train.get_text(i)) for i in range(500))
    for expected in ("small", "large", "top left", "bottom right", "centre", "upright", "left-leaning"):
        assert expected in words
    again = open_data("digits-captions")
    assert captions_of(again.test) == captions_of(test) and again.train.fingerprint() == train.fingerprint()


def test_digits_images_are_unchanged():
    digits, plain = open_data("digits"), open_data("digits-plain")  # (on every CPU: see DIGITS_FINGERPRINTS)
    assert (digits.train.fingerprint(), digits.test.fingerprint()) == DIGITS_FINGERPRINTS
    assert (plain.train.fingerprint(), plain.test.fingerprint()) == DIGITS_PLAIN_FINGERPRINTS
    assert not has_text(digits.train) and digits.train.fields == IMAGE_FIELDS
