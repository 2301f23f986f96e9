"""selfsup.data: decoding every image mode, bad-file policy, folder/npz layouts, splits, digits, pickling."""
from __future__ import annotations

import io
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, ImageOps

from selfsup.data import (
    DATASETS,
    ArraySource,
    DataError,
    DataSplits,
    DecodeError,
    FolderSource,
    channel_stats,
    decode_image,
    make_digits,
    open_data,
    write_bad_files,
)


def rgb_array(h=12, w=16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(im: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


def jpeg_bytes(seed=0, size=(24, 24)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb_array(size[1], size[0], seed)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- decoding


def test_decode_rgb_png_exact_and_bytes(tmp_path):
    a = rgb_array()
    path = save(Image.fromarray(a), tmp_path / "a.png")
    x = decode_image(path)
    assert x.dtype == torch.uint8 and x.shape == (3, 12, 16)
    assert torch.equal(x, torch.from_numpy(a).permute(2, 0, 1))
    assert torch.equal(decode_image(path.read_bytes()), x)  # bytes in, same result
    assert torch.equal(decode_image(str(path)), x)


def test_decode_grayscale_and_channel_conversion(tmp_path):
    g = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    path = save(Image.fromarray(g, "L"), tmp_path / "g.png")
    one = decode_image(path, channels=1)
    three = decode_image(path, channels=3)
    assert one.shape == (1, 12, 16) and torch.equal(one[0], torch.from_numpy(g))
    assert three.shape == (3, 12, 16) and all(torch.equal(three[c], one[0]) for c in range(3))
    # RGB -> 1 channel is luminance, as PIL's convert("L") (ITU-R 601), within rounding.
    a = rgb_array()
    rgb_path = save(Image.fromarray(a), tmp_path / "c.png")
    lum = decode_image(rgb_path, channels=1)
    expected = np.asarray(Image.fromarray(a).convert("L")).astype(int)
    assert lum.shape == (1, 12, 16)
    assert np.abs(lum[0].numpy().astype(int) - expected).max() <= 1


def test_decode_other_channel_counts_raise(tmp_path):
    path = save(Image.fromarray(rgb_array()), tmp_path / "a.png")
    for channels in (2, 4, 5):
        with pytest.raises(DecodeError, match="npz"):
            decode_image(path, channels=channels)


def test_decode_alpha_is_composited_on_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[...] = (200, 100, 50, 128)
    rgba[0, 0] = (255, 255, 255, 0)  # fully transparent white -> black
    rgba[0, 1] = (10, 20, 30, 255)  # opaque -> unchanged
    x = decode_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png")).permute(1, 2, 0).numpy()
    assert tuple(x[1, 1]) == (100, 50, 25)
    assert tuple(x[0, 0]) == (0, 0, 0)
    assert tuple(x[0, 1]) == (10, 20, 30)
    la = np.zeros((4, 4, 2), np.uint8)
    la[...] = (200, 255)
    la[0, 0] = (200, 0)
    y = decode_image(save(Image.fromarray(la, "LA"), tmp_path / "la.png"), channels=1)
    assert y.shape == (1, 4, 4) and y[0, 1, 1] == 200 and y[0, 0, 0] == 0


def test_decode_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 4))
    im.putpalette([255, 255, 255, 255, 0, 0] + [0] * 762)
    im.putdata([0, 0, 1, 1] * 4)
    path = save(im, tmp_path / "p.png", transparency=0)
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    x = decode_image(path).permute(1, 2, 0).numpy()
    assert tuple(x[0, 0]) == (0, 0, 0)  # transparent index -> black
    assert tuple(x[0, 3]) == (255, 0, 0)
    # A GIF palette image without transparency decodes to its palette colours.
    gif = save(im, tmp_path / "p.gif")
    assert tuple(decode_image(gif).permute(1, 2, 0).numpy()[0, 3]) == (255, 0, 0)


@pytest.mark.parametrize("subsampling", [0, 2])  # 4:4:4 and 4:2:0 chroma
def test_plain_rgb_jpegs_decode_through_libjpeg_to_pils_pixels(tmp_path, subsampling, monkeypatch):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (6, 5, 3)), np.ones((7, 7, 1))).astype(np.uint8)  # 42 x 35, odd width
    path = save(Image.fromarray(smooth), tmp_path / "rgb.jpg", quality=90, subsampling=subsampling)
    expected = np.asarray(Image.open(path).convert("RGB"))
    from selfsup.data import decode

    calls = []
    libjpeg = decode.decode_jpeg
    monkeypatch.setattr(decode, "decode_jpeg", lambda *a, **k: calls.append(1) or libjpeg(*a, **k))
    x = decode_image(path)
    assert calls and x.dtype == torch.uint8 and x.shape == (3, 42, 35) and x.is_contiguous()
    assert np.array_equal(x.permute(1, 2, 0).numpy(), expected)
    assert np.array_equal(decode_image(path.read_bytes()).numpy(), x.numpy())
    gray = save(Image.fromarray(smooth[..., 0]), tmp_path / "gray.jpg", quality=90)
    calls.clear()
    assert decode_image(gray).shape == (3, 42, 35) and not calls  # gray, CMYK, rotated: PIL's path


def test_decode_cmyk_jpeg(tmp_path):
    path = save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    x = decode_image(path)
    assert x.shape == (3, 8, 8)
    r, g, b = (int(v) for v in x[:, 4, 4])
    assert r > 230 and g < 25 and b < 25  # pure red


@pytest.mark.parametrize("kind", ["png16", "tiff16b", "tiff_i32"])
def test_decode_16_bit_scaled_to_8_bit(tmp_path, kind):
    v = np.linspace(0, 65535, 256).round().astype(np.uint16).reshape(16, 16)
    v[0, 0], v[-1, -1] = 0, 65535
    if kind == "png16":
        path = save(Image.fromarray(v), tmp_path / "a.png")  # PIL reopens it as I;16 (or I)
    elif kind == "tiff16b":
        path = save(Image.frombytes("I;16B", (16, 16), v.astype(">u2").tobytes()), tmp_path / "a.tif")
        assert Image.open(path).mode == "I;16B"
    else:
        path = save(Image.fromarray(v.astype(np.int32)), tmp_path / "a.tif")
        assert Image.open(path).mode == "I"
    x = decode_image(path, channels=1)[0].numpy()
    expected = np.rint(v.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert x.dtype == np.uint8 and x.min() == 0 and x.max() == 255
    assert np.array_equal(x, expected)


def test_decode_float_image(tmp_path):
    f = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    path = save(Image.fromarray(f, "F"), tmp_path / "f.tif")
    x = decode_image(path, channels=1)[0].numpy()
    assert x[0, 0] == 0 and x[-1, -1] == 255 and np.all(np.diff(x.reshape(-1).astype(int)) >= 0)


def test_decode_applies_exif_orientation(tmp_path):
    a = np.zeros((10, 20, 3), np.uint8)
    a[:, :10] = (255, 0, 0)  # left half red
    a[:, 10:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = save(Image.fromarray(a), tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    x = decode_image(path)
    assert x.shape == (3, 20, 10)  # rotated: H and W swapped
    reference = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert np.abs(x.permute(1, 2, 0).numpy().astype(int) - reference.astype(int)).max() <= 1
    top, bottom = x[:, 2, 5].tolist(), x[:, 17, 5].tolist()
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_decode_bad_inputs_raise_with_reason(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    data = jpeg_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    cases = {"zero.jpg": "empty", "text.jpg": "not a recognised image", "trunc.jpg": "truncated",
             "missing.jpg": "not found"}
    for name, reason in cases.items():
        with pytest.raises(DecodeError) as info:
            decode_image(tmp_path / name)
        assert reason in str(info.value), (name, str(info.value))
    with pytest.raises(DecodeError, match="empty"):
        decode_image(b"")


def test_truncated_images_refused_even_if_pil_flag_was_set(tmp_path):
    data = jpeg_bytes()
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(DecodeError, match="truncated"):
                decode_image(data[: len(data) // 2])
        assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


# ---------------------------------------------------------------------------------------------- folders


def make_folder(root: Path, layout: dict[str, int], size=(10, 8), seed=0) -> Path:
    """layout: relative folder -> number of PNG images to write there."""
    rng = np.random.default_rng(seed)
    for folder, n in layout.items():
        for i in range(n):
            a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            save(Image.fromarray(a), root / folder / f"img{i:03d}.png")
    return root


def add_bad_files(folder: Path) -> None:
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.JPG").write_text("not an image")
    data = jpeg_bytes()
    (folder / "trunc.jpeg").write_bytes(data[: len(data) // 2])


def test_bad_files_skipped_and_reported(tmp_path):
    root = make_folder(tmp_path / "d", {".": 27})
    add_bad_files(root)
    (root / "readme.txt").write_text("ignored: other extension")
    (root / ".hidden.png").write_bytes(b"")  # hidden: skipped, never reported
    save(Image.fromarray(rgb_array()), root / ".cache" / "x.png")  # hidden dir: skipped
    splits = open_data(str(root), max_bad_fraction=0.2)
    train = splits.train
    assert isinstance(train, FolderSource) and len(train) == 27 and splits.test is None and train.labels is None and train.classes is None
    assert train.ignored_files == 1
    reasons = {Path(p).name: r for p, r in train.bad_files}
    assert set(reasons) == {"zero.jpg", "notes.JPG", "trunc.jpeg"}
    assert "empty" in reasons["zero.jpg"] and "truncated" in reasons["trunc.jpeg"]
    assert "not a recognised image" in reasons["notes.JPG"]
    assert all(os.path.isabs(p) and os.path.exists(p) for p, _ in train.bad_files)
    out = tmp_path / "run" / "bad_files.txt"
    write_bad_files(train.bad_files + [("/x/with\ttab.png", "line one\nline two")], out)
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and all(len(line.split("\t")) == 2 for line in lines)
    assert lines[0].split("\t") == [train.bad_files[0][0], train.bad_files[0][1]]
    assert lines[-1] == "/x/with tab.png\tline one line two"


def test_too_many_bad_files_error_names_the_config_key(tmp_path):
    root = make_folder(tmp_path / "d", {".": 5})
    add_bad_files(root)
    with pytest.raises(DataError) as info:
        open_data(str(root), max_bad_fraction=0.1)
    message = str(info.value)
    assert "data.max_bad_fraction" in message and "3 of 8" in message and "zero.jpg" in message
    # ... and the same data passes with a looser policy
    assert len(open_data(str(root), max_bad_fraction=0.5).train) == 5
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    add_bad_files(only_bad)
    with pytest.raises(DataError, match="every image file"):
        open_data(str(only_bad), max_bad_fraction=1.0)


def test_empty_folder_and_no_images_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found under .*empty.*supported extensions"):
        open_data(str(tmp_path / "empty"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    (tmp_path / "docs" / "notes.doc").write_bytes(b"x")
    with pytest.raises(DataError, match="2 file.*other extensions were ignored"):
        open_data(str(tmp_path / "docs"))


def test_unknown_name_suggests_registered_dataset(tmp_path):
    assert "digits" in DATASETS
    with pytest.raises(DataError) as info:
        open_data("digit")
    assert "'digit'" in str(info.value) and "Did you mean 'digits'" in str(info.value)
    assert "folder" in str(info.value) and ".npz" in str(info.value)
    (tmp_path / "x.dat").write_text("1,2")  # (.csv is a caption manifest: tests/test_data_captions.py)
    with pytest.raises(DataError, match="not a .npz"):
        open_data(str(tmp_path / "x.dat"))


def test_split_folders_and_class_labels(tmp_path):
    root = make_folder(tmp_path / "d", {"train/cat": 3, "train/dog": 2, "train/eel/deep": 2, "val/cat": 1,
                                        "val/dog": 2})
    splits = open_data(str(root))
    train, test = splits.train, splits.test
    assert train.classes == ["cat", "dog", "eel"] and test.classes == train.classes
    assert len(train) == 7 and len(test) == 3
    assert train.labels.dtype == np.int64 and train.labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert test.labels.tolist() == [0, 1, 1]
    assert train.get_image(0).shape == (3, 8, 10)
    assert torch.equal(train.get_image(3), decode_image(train.path(3)))
    # test/ is preferred and works the same way; channels=1 gives one channel
    root2 = make_folder(tmp_path / "e", {"train/a": 2, "train/b": 2, "test/a": 1, "test/b": 1})
    splits2 = open_data(str(root2), channels=1)
    assert len(splits2.test) == 2 and splits2.train.get_image(0).shape == (1, 8, 10)


def test_unlabeled_and_mixed_folders(tmp_path):
    flat = make_folder(tmp_path / "flat", {".": 4, "sub": 2})  # images directly in root -> unlabeled
    splits = open_data(str(flat))
    assert len(splits.train) == 6 and splits.train.labels is None and splits.test is None
    split_unlabeled = make_folder(tmp_path / "s", {"train": 4, "test/a": 2})
    splits = open_data(str(split_unlabeled))
    assert splits.train.labels is None and splits.test.labels.tolist() == [0, 0]


def test_stratified_holdout_is_deterministic_disjoint_and_stratified(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 20, "b": 10, "c": 5, "single": 1}, size=(4, 4))
    s1 = open_data(str(root), seed=3, holdout_fraction=0.2)
    s2 = open_data(str(root), seed=3, holdout_fraction=0.2)
    s3 = open_data(str(root), seed=4, holdout_fraction=0.2)
    names = lambda src: [src.relpath(i) for i in range(len(src))]
    assert names(s1.train) == names(s2.train) and names(s1.test) == names(s2.test)
    assert set(names(s1.train)).isdisjoint(names(s1.test))
    assert len(s1.train) + len(s1.test) == 36
    assert np.bincount(s1.test.labels, minlength=4).tolist() == [4, 2, 1, 0]  # the lone image stays in train
    assert s1.test.classes == s1.train.classes == ["a", "b", "c", "single"]
    assert names(s1.test) != names(s3.test)
    for src in (s1.train, s1.test):
        for i in range(len(src)):
            assert src.relpath(i).split("/")[0] == src.classes[src.labels[i]]


def test_file_that_goes_bad_after_scan_raises_decode_error_with_path(tmp_path):
    root = make_folder(tmp_path / "d", {".": 3})
    train = open_data(str(root)).train
    Path(train.path(1)).write_bytes(b"")
    with pytest.raises(DecodeError) as info:
        train.get_image(1)
    assert "empty" in str(info.value) and info.value.path == train.path(1)


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    root = make_folder(tmp_path / "d", {".": 3})
    fp = open_data(str(root)).train.fingerprint()
    assert fp == open_data(str(root)).train.fingerprint() and len(fp) == 16
    target = root / "img001.png"
    save(Image.fromarray(rgb_array(8, 10, seed=99)), target)
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    assert open_data(str(root)).train.fingerprint() != fp
    assert open_data(str(root), channels=1).train.fingerprint() != open_data(str(root)).train.fingerprint()
    a = ArraySource(np.zeros((2, 3, 4, 4), np.uint8))
    b = ArraySource(np.ones((2, 3, 4, 4), np.uint8))
    assert a.fingerprint() != b.fingerprint()


def test_sources_pickle_cheaply_and_identically(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 3, "b": 3})
    splits = open_data(str(root), holdout_fraction=0.34)
    for src in (splits.train, splits.test):
        blob = pickle.dumps(src)
        clone = pickle.loads(blob)
        assert len(blob) < 4000  # paths, not pixels
        assert len(clone) == len(src) and clone.fingerprint() == src.fingerprint()
        assert np.array_equal(clone.labels, src.labels) and clone.classes == src.classes
        assert all(torch.equal(clone.get_image(i), src.get_image(i)) for i in range(len(src)))
    array_source = ArraySource(np.random.default_rng(0).integers(0, 256, (5, 2, 6, 6), dtype=np.uint8),
                               labels=np.arange(5) % 2)
    clone = pickle.loads(pickle.dumps(array_source))
    assert torch.equal(clone.get_image(4), array_source.get_image(4))
    assert clone.fingerprint() == array_source.fingerprint()


def test_channel_stats_on_folder_matches_direct_computation(tmp_path):
    root = make_folder(tmp_path / "d", {".": 6})
    train = open_data(str(root)).train
    mean, std = channel_stats(train)
    x = torch.stack([train.get_image(i) for i in range(len(train))]).double() / 255
    assert np.allclose(mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-6)
    assert np.allclose(std, x.std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-6)
    assert channel_stats(train, max_images=3, seed=1) == channel_stats(train, max_images=3, seed=1)


# ---------------------------------------------------------------------------------------------- npz


def test_npz_layouts(tmp_path):
    rng = np.random.default_rng(0)
    hw = rng.integers(0, 256, (6, 9, 7), dtype=np.uint8)
    np.savez(tmp_path / "gray.npz", images=hw)
    s = open_data(str(tmp_path / "gray.npz"))
    assert s.test is None and s.train.labels is None
    x = s.train.get_image(2)
    assert x.shape == (3, 9, 7) and all(torch.equal(x[c], torch.from_numpy(hw[2])) for c in range(3))
    assert open_data(str(tmp_path / "gray.npz"), channels=1).train.get_image(2).shape == (1, 9, 7)

    nhwc = rng.integers(0, 256, (6, 9, 7, 3), dtype=np.uint8)
    np.savez(tmp_path / "nhwc.npz", images=nhwc)
    src = open_data(str(tmp_path / "nhwc.npz")).train
    assert torch.equal(src.get_image(1), torch.from_numpy(nhwc[1]).permute(2, 0, 1))

    nchw16 = rng.integers(0, 65536, (6, 3, 9, 7)).astype(np.uint16)
    nchw16[0, 0, 0, 0], nchw16[0, 0, 0, 1] = 0, 65535
    np.savez(tmp_path / "nchw16.npz", images=nchw16)
    x = open_data(str(tmp_path / "nchw16.npz"), pixels="8bit").train.get_image(0)
    assert x.shape == (3, 9, 7) and x[0, 0, 0] == 0 and x[0, 0, 1] == 255
    assert torch.equal(x, torch.from_numpy(np.rint(nchw16[0].astype(np.float64) * 255 / 65535).astype(np.uint8)))
    raw = open_data(str(tmp_path / "nchw16.npz")).train  # 16-bit data stays 16-bit: windowed to float [0, 1]
    assert raw.raw and raw.stats.dtype == "uint16" and raw.get_image(0).dtype == torch.float32
    low, high = raw.window.low[0], raw.window.high[0]
    expected = np.clip((nchw16[0, 0].astype(np.float32) - low) / (high - low), 0, 1)
    assert torch.allclose(raw.get_image(0)[0], torch.from_numpy(expected), atol=1e-6)

    floats = rng.random((6, 9, 7, 3), dtype=np.float32)
    np.savez(tmp_path / "float.npz", images=floats)
    x = open_data(str(tmp_path / "float.npz"), pixels="8bit").train.get_image(0)
    assert torch.equal(x, torch.from_numpy(np.rint(floats[0] * 255).astype(np.uint8)).permute(2, 0, 1))
    assert open_data(str(tmp_path / "float.npz")).train.get_image(0).dtype == torch.float32


def test_npz_five_channels(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 5, 8, 8), dtype=np.uint8)
    labels = np.arange(10) % 2
    np.savez(tmp_path / "multi.npz", images=images, labels=labels, classes=np.array(["land", "water"]))
    s = open_data(str(tmp_path / "multi.npz"), channels=5, holdout_fraction=0.2)
    assert s.train.channels == 5 and s.train.get_image(0).shape == (5, 8, 8)
    assert s.train.classes == ["land", "water"] and len(s.train) == 8 and len(s.test) == 2
    assert np.bincount(s.test.labels).tolist() == [1, 1]
    with pytest.raises(DataError) as info:
        open_data(str(tmp_path / "multi.npz"), channels=3)
    assert "'images'" in str(info.value) and "(10, 5, 8, 8)" in str(info.value) and "5" in str(info.value)
    # channels-last 5-channel layout
    np.savez(tmp_path / "multi_last.npz", images=images.transpose(0, 2, 3, 1))
    x = open_data(str(tmp_path / "multi_last.npz"), channels=5).train.get_image(3)
    # 5 bands are measurements (channel kind "bands"), read raw; 8-bit data keeps its 0..255 window
    assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(images[3]))
    assert open_data(str(tmp_path / "multi_last.npz")).train.channel_kind == "bands"  # channels follow the data


def test_npz_explicit_test_split_and_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8),
             labels=np.array(["b", "a", "b", "a", "c", "c"]),
             test_images=rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8), test_labels=np.array(["c", "a", "b"]))
    s = open_data(str(tmp_path / "d.npz"))
    assert s.train.classes == ["a", "b", "c"] and s.train.labels.tolist() == [1, 0, 1, 0, 2, 2]
    assert s.test.labels.tolist() == [2, 0, 1] and len(s.train) == 6
    np.savez(tmp_path / "bad.npz", pixels=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="no key 'images'.*pixels"):
        open_data(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "mismatch.npz", images=np.zeros((3, 4, 4), np.uint8), labels=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="'labels'"):
        open_data(str(tmp_path / "mismatch.npz"))


# ---------------------------------------------------------------------------------------------- digits


def test_digits_dataset():
    splits = open_data("digits")
    train, test = splits.train, splits.test
    assert isinstance(splits, DataSplits) and len(train) == 1000 and len(test) == 1000
    assert train.images.shape == (1000, 3, 32, 32) and train.images.dtype == np.uint8
    x = train.get_image(0)
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
    assert train.classes == [str(i) for i in range(10)]
    assert np.bincount(train.labels).tolist() == [100] * 10 and np.bincount(test.labels).tolist() == [100] * 10
    # new handwriting at test time: disjoint source digits, about 78% / 22% of the 1,797
    train_ids, test_ids = set(train.source_ids.tolist()), set(test.source_ids.tolist())
    assert train_ids.isdisjoint(test_ids)
    assert 600 <= len(train_ids) <= 1402 and len(test_ids) <= 397  # 1,000 draws from ~1,400 train digits
    assert len(train.mean) == len(train.std) == 3 and all(0 < s < 0.5 for s in train.std)
    assert test.mean == train.mean  # normalise the test split with train statistics
    assert channel_stats(train) == (train.mean, train.std)
    gray = open_data("digits", channels=1)
    assert gray.train.get_image(0).shape == (1, 32, 32) and len(gray.train.mean) == 1
    # gray images: a light digit over a dark background under per-pixel noise of sigma ~0.25 (64 of 255)
    images = train.images.astype(np.float64)
    assert (images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all()
    assert 45 < np.median(images) < 80  # the background level, 0.25
    residual = images[:, 0, :, 1:] - images[:, 0, :, :-1]  # neighbouring pixels: mostly independent noise
    assert 70 < residual.std() < 100  # sqrt(2) * 64, a little less where 0 and 255 clip
    x = train.images.astype(np.float64) / 255  # mean/std are the train split's, per channel
    assert np.allclose(x.mean(axis=(0, 2, 3)), train.mean, atol=0.01)
    assert np.allclose(x.std(axis=(0, 2, 3)), train.std, atol=0.01)


def test_raw_pixels_do_not_solve_the_demo_digits_but_do_solve_the_plain_ones():
    """The demo's data must leave room for pretraining to show: raw-pixel kNN (the demo's baseline) is weak on
    ``digits`` (measured 21.9%; SimCLR reaches ~31% in the demo's 4 minutes) and strong on ``digits-plain``."""
    from selfsup.eval.features import raw_pixel_features
    from selfsup.eval.knn import knn_accuracy

    accuracy = {}
    for name in ("digits", "digits-plain"):
        splits = open_data(name)
        train, train_labels = raw_pixel_features(splits.train, image_size=32, mean=splits.train.mean,
                                                 std=splits.train.std)
        test, test_labels = raw_pixel_features(splits.test, image_size=32, mean=splits.train.mean,
                                               std=splits.train.std)
        accuracy[name] = knn_accuracy(train, train_labels, test, test_labels, ks=(20,))[20]
    assert accuracy["digits"] < 0.27 and accuracy["digits-plain"] > 0.65, accuracy


def test_digits_generation_is_deterministic_and_parametrized():
    a = make_digits.__wrapped__(n_train=120, n_test=40)
    b = make_digits.__wrapped__(n_train=120, n_test=40)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["train_images"].shape == (120, 3, 32, 32) and a["test_images"].shape == (40, 3, 32, 32)
    assert np.bincount(a["test_labels"]).tolist() == [4] * 10
    c = make_digits.__wrapped__(n_train=120, n_test=40, seed=1)
    assert not np.array_equal(a["train_images"], c["train_images"])
    pickled = pickle.loads(pickle.dumps(open_data("digits").test))
    assert torch.equal(pickled.get_image(7), open_data("digits").test.get_image(7))


def test_plain_digits_share_source_digits_and_labels_with_the_noisy_ones():
    noisy = make_digits.__wrapped__(n_train=120, n_test=40)
    plain = make_digits.__wrapped__(n_train=120, n_test=40, style="plain")
    for key in ("train_labels", "test_labels", "train_source_ids", "test_source_ids"):
        assert np.array_equal(noisy[key], plain[key]), key
    images = plain["train_images"]
    assert images.shape == (120, 3, 32, 32)
    assert (images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all()  # gray
    assert (images == 0).mean() > 0.5 and images.max() == 255  # white strokes on a black background
    splits = open_data("digits-plain")
    assert splits.train.name == "digits-plain/train" and len(splits.train) == 6000 and len(splits.test) == 1000
    with pytest.raises(DataError, match="'plain'"):
        make_digits.__wrapped__(n_train=10, n_test=10, style="textured")
