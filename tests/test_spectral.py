"""The generated multispectral set and toy volumes of selfsup.data.spectral: determinism, layout, value range,
difficulty (learnable, but not by raw pixels alone) and the GeoTIFF folder writer."""
import json
import sys

import numpy as np
import pytest

from selfsup.data.geotiff import write_geotiff_folder
from selfsup.data.spectral import (SPECTRAL_BANDS, SPECTRAL_CLASSES, SPECTRAL_RGB_BANDS, SPECTRAL_WAVELENGTHS_NM,
                                   generate_spectral, spectral_splits_arrays)
from selfsup.data.volumes import VOLUME_CLASSES, generate_volumes


@pytest.fixture(scope="module")
def small():
    """600 train and 200 test images: enough for the sanity checks, generated in a fraction of a second."""
    return spectral_splits_arrays(train=600, test=200, seed=3)


def test_metadata():
    assert len(SPECTRAL_CLASSES) == 10 == len(set(SPECTRAL_CLASSES))
    assert SPECTRAL_BANDS == ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    assert len(SPECTRAL_WAVELENGTHS_NM) == 13
    assert list(SPECTRAL_WAVELENGTHS_NM) == sorted(SPECTRAL_WAVELENGTHS_NM)  # band order is wavelength order
    assert [SPECTRAL_BANDS[i] for i in SPECTRAL_RGB_BANDS] == ["B4", "B3", "B2"]
    red, green, blue = (SPECTRAL_WAVELENGTHS_NM[i] for i in SPECTRAL_RGB_BANDS)
    assert 620 < red < 700 and 520 < green < 580 and 450 < blue < 500


def test_shapes_dtypes_balance():
    images, labels = generate_spectral(103, seed=0)
    assert images.shape == (103, 13, 32, 32) and images.dtype == np.uint16
    assert labels.shape == (103,) and labels.dtype == np.int64
    counts = np.bincount(labels, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 103
    empty, no_labels = generate_spectral(0, seed=0)
    assert empty.shape == (0, 13, 32, 32) and no_labels.shape == (0,)


def test_deterministic():
    a, la = generate_spectral(40, seed=5)
    b, lb = generate_spectral(40, seed=5)
    assert a.tobytes() == b.tobytes() and np.array_equal(la, lb)
    c, _ = generate_spectral(40, seed=6)
    assert a.tobytes() != c.tobytes()


def test_splits_use_different_seeds(small):
    assert set(small) == {"images", "labels", "test_images", "test_labels", "classes"}
    assert small["images"].shape == (600, 13, 32, 32) and small["test_images"].shape == (200, 13, 32, 32)
    assert small["classes"] == SPECTRAL_CLASSES
    # The test split is not a prefix of (or equal to) the train split's stream.
    assert small["images"][:200].tobytes() != small["test_images"].tobytes()
    again = spectral_splits_arrays(train=10, test=10, seed=3)
    assert np.array_equal(again["test_images"], generate_spectral(10, 7)[0])  # test seed 2 * 3 + 1


def test_value_range(small):
    images = small["images"]
    assert images.max() <= 16000
    above = (images > 10000).mean()
    # Mostly reflectance-like 0..10000, with a few percent of bright clouds/glints above that.
    assert 0.002 < above < 0.05
    # Reflectance-like band medians: not empty, not saturated (B10, the cirrus band, is dark).
    medians = np.median(images, axis=(0, 2, 3))
    assert np.all(medians[[1, 2, 3, 7, 11]] > 500) and np.all(medians < 6000)
    assert medians[SPECTRAL_BANDS.index("B10")] < 500


def test_spectral_signatures(small):
    """The materials behave as documented: water dark in the near infrared, vegetation bright past the red
    edge, snow bright in the visible and dark in the SWIR."""
    medians = {}
    for name in ("water", "forest", "cropland", "snow"):
        # Medians: robust to the clouds and to the random background material.
        medians[name] = np.median(small["images"][small["labels"] == SPECTRAL_CLASSES.index(name)], axis=(0, 2, 3))
    b3, b4, b8, b11 = (SPECTRAL_BANDS.index(b) for b in ("B3", "B4", "B8", "B11"))
    assert medians["water"][b8] < medians["water"][b3]
    for veg in ("forest", "cropland"):
        assert medians[veg][b8] > 1.8 * medians[veg][b4]  # the red edge (cropland is half soil)
    assert medians["snow"][b3] > 4 * medians["snow"][b11]


def _knn_accuracy(train, train_labels, test, test_labels, k=20):
    """Cosine kNN (majority of k) on per-feature standardized flattened pixels."""
    train = train.reshape(len(train), -1).astype(np.float32)
    test = test.reshape(len(test), -1).astype(np.float32)
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    test /= np.linalg.norm(test, axis=1, keepdims=True)
    nearest = np.argsort(-(test @ train.T), axis=1)[:, :k]
    votes = np.stack([np.bincount(row, minlength=10) for row in train_labels[nearest]])
    return float((votes.argmax(1) == test_labels).mean())


def test_learnable_but_not_from_raw_pixels(small):
    x, y, xt, yt = small["images"], small["labels"], small["test_images"], small["test_labels"]
    # Nearest centroid on per-image band means: well above chance (10%).
    means, test_means = x.astype(np.float32).mean((2, 3)), xt.astype(np.float32).mean((2, 3))
    scale = means.std(0)
    centroids = np.stack([means[y == c].mean(0) for c in range(10)]) / scale
    predicted = np.argmin((((test_means / scale)[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == yt).mean() > 0.3
    # Raw-pixel kNN: above chance, far from perfect (about 45% at 5,000 train images).
    accuracy = _knn_accuracy(x, y, xt, yt)
    assert 0.2 < accuracy < 0.8


def test_write_geotiff_folder(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    images, labels = generate_spectral(12, seed=1)
    paths = write_geotiff_folder(tmp_path, images, labels, SPECTRAL_CLASSES, split="train")
    assert len(paths) == 12
    for i, path in enumerate(paths):
        assert path == tmp_path / "train" / SPECTRAL_CLASSES[labels[i]] / f"{i:05d}.tif"
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            data = page.asarray()
            assert data.shape == (13, 32, 32) and data.dtype == np.uint16
            assert np.array_equal(data, images[i])
            assert page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
            tags = page.tags
            assert tuple(tags[33550].value) == (10.0, 10.0, 0.0)
            assert len(tags[33922].value) == 6
            keys = tags[34735].value
            assert keys[:4] == (1, 1, 0, 4) and 32632 in keys
    meta = json.loads((tmp_path / "bands.json").read_text())
    assert meta["bands"] == SPECTRAL_BANDS and meta["wavelengths_nm"] == SPECTRAL_WAVELENGTHS_NM
    # Without a split: root/<class>/<index>.tif
    flat = write_geotiff_folder(tmp_path / "flat", images[:2], labels[:2], SPECTRAL_CLASSES)
    assert flat[0] == tmp_path / "flat" / SPECTRAL_CLASSES[labels[0]] / "00000.tif"
    assert np.array_equal(tifffile.imread(flat[1]), images[1])


def test_geotiff_needs_tifffile(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tifffile", None)  # import tifffile now raises ImportError
    images, labels = generate_spectral(1, seed=0)
    with pytest.raises(ImportError, match=r"selfsup\[tiff\]"):
        write_geotiff_folder(tmp_path, images, labels, SPECTRAL_CLASSES)


def test_volumes():
    volumes, labels = generate_volumes(42, seed=0)
    assert volumes.shape == (42, 1, 16, 16, 16) and volumes.dtype == np.uint16
    assert labels.dtype == np.int64 and np.bincount(labels, minlength=4).tolist() == [11, 11, 10, 10]
    again, again_labels = generate_volumes(42, seed=0)
    assert volumes.tobytes() == again.tobytes() and np.array_equal(labels, again_labels)
    assert volumes.tobytes() != generate_volumes(42, seed=1)[0].tobytes()
    assert generate_volumes(4, seed=0, size=8)[0].shape == (4, 1, 8, 8, 8)
    assert len(VOLUME_CLASSES) == 4


def test_volume_class_not_in_mean_intensity():
    volumes, labels = generate_volumes(400, seed=2)
    means = volumes.reshape(len(volumes), -1).astype(np.float64).mean(1)
    class_means = np.array([means[labels == c].mean() for c in range(4)])
    # Per-volume means spread over 800-2,000 in every class; the class averages differ by far less.
    assert class_means.max() - class_means.min() < 0.3 * means.std()
    # ...while the structure does separate them: a nearest-centroid on the sorted standardized voxel values
    # (a pose-free shape statistic) is well above chance (25%).
    flat = volumes.reshape(len(volumes), -1).astype(np.float32)
    flat = np.sort((flat - flat.mean(1, keepdims=True)) / flat.std(1, keepdims=True), axis=1)
    train, test = slice(0, 300), slice(300, 400)
    centroids = np.stack([flat[train][labels[train] == c].mean(0) for c in range(4)])
    predicted = np.argmin(((flat[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == labels[test]).mean() > 0.4
