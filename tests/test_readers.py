"""selfsup.data.readers: domain files keep their bands, dtype and values; bad ones get a reason with the fix."""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from selfsup.data.decode import DecodeError
from selfsup.data.readers import (
    RAW_EXTENSIONS,
    READERS,
    MissingExtra,
    RawInfo,
    check_raw,
    consistency_problems,
    probe_raw,
    raw_extension,
    read_raw,
)

H, W = 10, 12


def bands(c=13, h=H, w=W, dtype=np.uint16, seed=0) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max, (c, h, w), dtype=dtype, endpoint=True)


def write(path, data: bytes):
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------------- names


def test_extensions_and_their_readers():
    assert RAW_EXTENSIONS == (".tif", ".tiff", ".png", ".npy", ".npz", ".nii", ".nii.gz", ".dcm")
    assert set(READERS) == set(RAW_EXTENSIONS)
    assert raw_extension("a/scan.NII.GZ") == ".nii.gz" and raw_extension("b/T.Tif") == ".tif"
    assert raw_extension("photo.jpg") is None and raw_extension("archive.gz") is None


def test_unreadable_inputs_raise_decode_error(tmp_path):
    with pytest.raises(DecodeError, match="empty file"):
        read_raw(write(tmp_path / "a.npy", b""))
    with pytest.raises(DecodeError, match="none of"):
        read_raw(write(tmp_path / "a.jpg", b"\xff\xd8\xff"))
    with pytest.raises(DecodeError, match="unknown raw image format '.jpg'"):
        read_raw(b"\xff\xd8\xff", extension=".jpg")
    with pytest.raises(DecodeError, match="cannot tell the format"):
        read_raw(b"hello, world")


# ---------------------------------------------------------------------------------------------------- TIFF


def geotiff_bytes(array: np.ndarray, **kw) -> bytes:
    tifffile = pytest.importorskip("tifffile")
    buffer = io.BytesIO()
    geo = [(33550, "d", 3, (10.0, 10.0, 0.0), False), (33922, "d", 6, (0, 0, 0, 600000.0, 5200000.0, 0), False)]
    tifffile.imwrite(buffer, array, extratags=geo, **kw)
    return buffer.getvalue()


@pytest.mark.parametrize("planarconfig", ["separate", "contig"])
def test_13_band_uint16_geotiff_round_trips_exactly(tmp_path, planarconfig):
    array = bands()
    stored = array if planarconfig == "separate" else np.moveaxis(array, 0, -1)
    path = write(tmp_path / "tile.tif", geotiff_bytes(stored, planarconfig=planarconfig, photometric="minisblack"))
    got = read_raw(path)
    assert got.shape == (13, H, W) and got.dtype == np.uint16 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, array)
    assert probe_raw(path) == RawInfo(bands=13, dtype="uint16", shape=(13, H, W))


def test_tiff_pages_are_bands_and_z_is_depth():
    tifffile = pytest.importorskip("tifffile")
    pages = bands(5, dtype=np.int16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pages, photometric="minisblack", metadata=None)  # 5 pages, no shape description
    np.testing.assert_array_equal(read_raw(buffer.getvalue(), ".tiff"), pages)
    np.testing.assert_array_equal(read_raw(geotiff_bytes(pages[0])), pages[:1])  # bytes: sniffed as TIFF
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pages.astype(np.float32), imagej=True, metadata={"axes": "ZYX"})
    assert read_raw(buffer.getvalue(), ".tif").shape == (1, 5, H, W)


@pytest.mark.parametrize("kw", [{"planarconfig": "separate", "photometric": "minisblack"},
                                {"photometric": "minisblack", "metadata": None}])
def test_truncated_tiff_is_refused(tmp_path, kw):
    data = geotiff_bytes(bands(), **kw)
    assert read_raw(data, ".tif").shape == (13, H, W)
    with pytest.raises(DecodeError, match="truncated or corrupt TIFF"):
        read_raw(write(tmp_path / "cut.tif", data[: len(data) // 2]))


def test_missing_extra_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tifffile", None)
    with pytest.raises(MissingExtra, match=r"needs tifffile: pip install 'selfsup\[tiff\]'") as raised:
        read_raw(write(tmp_path / "a.tif", b"II*\x00" + bytes(64)))
    assert isinstance(raised.value, ImportError) and raised.value.extra == "tiff"


# ----------------------------------------------------------------------------------------------------- PNG


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_16_bit_png_keeps_its_values(tmp_path):
    values = np.tile(np.array([0, 65535, 1234, 7], np.uint16), (H, W // 4))
    got = read_raw(write(tmp_path / "a.png", png_bytes(Image.fromarray(values))))
    assert got.dtype == np.uint16 and got.shape == (1, H, W)
    np.testing.assert_array_equal(got[0], values)


def test_png_modes_keep_their_channels():
    rgba = bands(4, dtype=np.uint8)
    np.testing.assert_array_equal(read_raw(png_bytes(Image.fromarray(np.moveaxis(rgba, 0, -1), "RGBA"))), rgba)
    assert read_raw(png_bytes(Image.new("LA", (W, H)))).shape == (2, H, W)
    palette = Image.new("P", (W, H))
    assert read_raw(png_bytes(palette)).shape == (3, H, W)
    rgb16 = png_bytes(Image.new("RGB", (W, H)))
    rgb16 = rgb16[:24] + b"\x10" + rgb16[25:]  # the IHDR's bit depth only: refused before any decoding
    with pytest.raises(DecodeError, match="16-bit colour PNG"):
        read_raw(rgb16, ".png")


# -------------------------------------------------------------------------------------------- .npy and .npz


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def test_npy_layouts(tmp_path):
    array = bands(4, dtype=np.uint16)
    np.testing.assert_array_equal(read_raw(write(tmp_path / "cf.npy", npy_bytes(array))), array)
    last = read_raw(write(tmp_path / "cl.npy", npy_bytes(np.moveaxis(array, 0, -1))))
    assert last.flags.c_contiguous
    np.testing.assert_array_equal(last, array)
    assert read_raw(npy_bytes(array[0].astype(">f4"))).dtype == np.float32  # native byte order
    assert read_raw(npy_bytes(np.zeros((1, 3, H, W)))).shape == (1, 3, H, W)  # (C, D, H, W) as it is
    with pytest.raises(DecodeError, match="no band axis"):
        read_raw(npy_bytes(np.zeros((80, 80, 80), np.uint8)))
    with pytest.raises(DecodeError, match="object"):
        read_raw(npy_bytes(np.array([{"a": 1}], dtype=object)))


def test_npz_image_key_or_only_array(tmp_path):
    array = bands(3, dtype=np.uint8)
    with_key, only, several = (tmp_path / name for name in ("key.npz", "only.npz", "several.npz"))
    np.savez(with_key, image=array, mask=np.zeros((H, W)))
    np.savez(only, x=np.moveaxis(array, 0, -1))
    np.savez(several, a=array, b=array)
    np.testing.assert_array_equal(read_raw(with_key), array)
    np.testing.assert_array_equal(read_raw(only), array)
    with pytest.raises(DecodeError, match="arrays a, b and none named 'image'"):
        read_raw(several)


# --------------------------------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz"])
def test_nifti_volume_is_c_d_h_w(tmp_path, name):
    nibabel = pytest.importorskip("nibabel")
    volume = np.arange(W * H * 6, dtype=np.int16).reshape(W, H, 6) - 300  # (X, Y, Z)
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), tmp_path / name)
    got = read_raw(tmp_path / name)
    assert got.shape == (1, 6, H, W) and got.dtype == np.int16
    np.testing.assert_array_equal(got[0], volume.transpose(2, 1, 0))
    series = nibabel.Nifti1Image(np.stack([volume, volume + 1], axis=-1), np.eye(4))  # (X, Y, Z, T)
    got = read_raw(series.to_bytes(), ".nii")
    assert got.shape == (2, 6, H, W)
    np.testing.assert_array_equal(got[1], volume.T + 1)


def test_nifti_scaling_is_applied():
    nibabel = pytest.importorskip("nibabel")
    image = nibabel.Nifti1Image(np.arange(W * H, dtype=np.int16).reshape(W, H), np.eye(4))
    image.header.set_slope_inter(2.0, -10.0)
    got = read_raw(image.to_bytes(), ".nii")
    assert got.shape == (1, H, W) and got.dtype.kind == "f"
    np.testing.assert_array_equal(got[0], np.arange(W * H).reshape(W, H).T * 2.0 - 10.0)


# --------------------------------------------------------------------------------------------------- DICOM


def dicom_bytes(pixels: np.ndarray, rescale: tuple[float, float] | None = None) -> bytes:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = pixels.astype("<u2").tobytes()
    buffer = io.BytesIO()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(buffer, enforce_file_format=True)
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(buffer, write_like_original=False)
    return buffer.getvalue()


def test_dicom_16_bit_with_and_without_rescale(tmp_path):
    pixels = bands(1, dtype=np.uint16)[0]
    got = read_raw(write(tmp_path / "a.dcm", dicom_bytes(pixels)))
    assert got.dtype == np.uint16 and got.shape == (1, H, W)
    np.testing.assert_array_equal(got[0], pixels)
    got = read_raw(dicom_bytes(pixels, rescale=(2.0, -1024.0)))  # bytes: sniffed by the 'DICM' marker
    assert got.dtype == np.float32 and got.shape == (1, H, W)
    np.testing.assert_allclose(got[0], pixels.astype(np.float64) * 2 - 1024, rtol=1e-6)
    frames = bands(4, dtype=np.uint16)
    assert read_raw(dicom_bytes(frames), ".dcm").shape == (1, 4, H, W)
    with pytest.raises(DecodeError, match="not a DICOM file"):
        read_raw(b"\x00" * 200, ".dcm")


# ------------------------------------------------------------------------------------------------- checks


def with_value(value, where=((2, 0, 0), (2, 1, 1), (2, 3, 4))) -> np.ndarray:
    array = np.zeros((4, 64, 64), np.float32)
    for index in where:
        array[index] = value
    return array


@pytest.mark.parametrize("array, problem, fix", [
    (with_value(np.nan), "3 NaN pixels (of 4096) in band 2", "fill them"),
    (with_value(-np.inf, where=((0, 0, 0), (3, 0, 0))), "1 +/-inf pixel (of 4096) in band 0 (and in 1 more band)",
     "nodata value"),
    (np.zeros((2, 16, 16), np.complex64), "unsupported pixel dtype complex64", "integers (uint8"),
    (np.zeros((1, 16, 16), bool), "unsupported pixel dtype bool", "uint8"),
    (np.zeros((3, 1, 1), np.uint16), "image is 1x1 pixels, smaller than 8x8", "remove the file"),
    (np.zeros((0, 16, 16), np.uint8), "0 bands", "remove the file"),
    (np.zeros((16, 16), np.uint8), "expected (C, H, W)", "read_raw"),
])
def test_check_raw_names_the_problem_and_the_fix(array, problem, fix):
    reason = check_raw(array)
    assert problem in reason and fix in reason


def test_check_raw_accepts_good_arrays_and_small_depths():
    assert check_raw(bands()) is None
    assert check_raw(np.zeros((1, 2, 8, 8), np.float64)) is None
    assert check_raw(np.zeros((1, 8, 8), np.float16), min_side=9).startswith("image is 8x8")


def test_probe_raw_raises_check_raws_reason(tmp_path):
    with pytest.raises(DecodeError, match="NaN pixels"):
        probe_raw(write(tmp_path / "nan.npy", npy_bytes(with_value(np.nan))))


def test_consistency_problems_flag_the_odd_files():
    infos = {f"img{i:02d}.tif": RawInfo(13, "uint16", (13, 64, 64)) for i in range(38)}
    infos["few_bands.tif"] = RawInfo(4, "uint16", (4, 64, 64))
    infos["float.tif"] = RawInfo(13, "float64", (13, 64, 64))
    majority, problems = consistency_problems(infos)
    assert (majority.bands, majority.dtype, majority.ndim, majority.files) == (13, "uint16", 2, 40)
    assert list(problems) == ["few_bands.tif", "float.tif"]  # in path order
    assert problems["few_bands.tif"] == ("4 bands where the folder's images have 13 (the majority: 39 of 40 files); "
                                         "drop it or re-export it with 13 bands")
    assert problems["float.tif"].startswith("float64 where the folder's images are uint16") \
        and problems["float.tif"].endswith("convert it to uint16")


def test_consistency_ties_and_dimensions():
    infos = {"b.nii": RawInfo(1, "int16", (1, 5, 8, 8)), "a.png": RawInfo(1, "uint8", (1, 8, 8))}
    majority, problems = consistency_problems(infos)
    assert (majority.dtype, majority.ndim) == ("uint8", 2)  # a tie: the first path in sorted order wins
    assert "3-D where the folder's images are 2-D" in problems["b.nii"] and "; also " in problems["b.nii"]
    assert consistency_problems({}) == (None, {})
