"""Read a domain image file (satellite, medical, microscopy) as it is: every band, its dtype, its value range.

:func:`selfsup.data.decode.decode_image` makes 8-bit RGB of every file: right for photographs, wrong for a
13-band uint16 Sentinel-2 tile or a CT volume in Hounsfield units. :func:`read_raw` returns a C-contiguous,
native-byte-order array ``(C, H, W)`` (an image) or ``(C, D, H, W)`` (a volume) in the file's own dtype, and
raises :class:`DecodeError` (``str`` is the reason) for anything unreadable. The rules (:data:`READERS`):

- ``.tif`` / ``.tiff`` (tifffile, extra ``tiff``): the first series. Its axes string says which axis holds the
  bands: ``S`` (samples, contiguous or separate planar configuration), ``C``, ``Q``, ``I`` or ``T`` (pages);
  ``Z`` is depth, so ``ZYX`` is a volume ``(1, D, H, W)``. Length-1 axes are dropped first (ImageJ writes
  ``T=1, Z=1``). Only when the axes string does not name ``Y`` and ``X`` is the smallest axis taken as the
  band axis. GeoTIFF tags are ignored: the pixels are what is read. A TIFF whose data or page chain runs past
  the end of the file is reported as truncated, never read as fewer bands.
- ``.png`` (PIL): 8-bit ``L``/``LA``/``RGB``/``RGBA`` keep all their channels (alpha is a band: raw means
  raw); 16-bit gray stays uint16 (PIL's ``I`` mode is uint16 when its values fit, else int32); palette images
  become RGB, or RGBA when they have transparency; 1-bit images become uint8 0/1. 16-bit colour PNGs are
  refused, since PIL would silently keep only their top 8 bits.
- ``.npy`` (never unpickled): 2-D is ``(H, W)``; 3-D is channels-first when ``shape[0] <= 64`` and
  ``shape[0]`` is below both other sides, else channels-last when ``shape[-1] <= 64``, else refused (a volume
  should be saved as ``(1, D, H, W)``); 4-D is taken as ``(C, D, H, W)`` already.
- ``.npz`` (one image per file): the array ``image``, else the only array; then as ``.npy``.
- ``.nii`` / ``.nii.gz`` (nibabel, extra ``nifti``): ``np.asanyarray(img.dataobj)``, i.e. the stored values
  with the header's ``scl_slope``/``scl_inter`` applied when set (nibabel then returns float64, which keeps
  scaled int32 data exact; unscaled files keep their stored dtype). The axes are reversed, not reoriented
  (the affine is not applied): ``(X, Y)`` -> ``(1, Y, X)``, ``(X, Y, Z)`` -> ``(1, Z, Y, X)``, ``(X, Y, Z, T)``
  -> ``(T, Z, Y, X)``.
- ``.dcm`` (pydicom, extra ``dicom``): ``ds.pixel_array``; when ``RescaleSlope`` or ``RescaleIntercept`` is
  present it is applied and the result is float32, else the stored dtype is kept. One frame ``(H, W)`` ->
  ``(1, H, W)``, colour ``(H, W, 3)`` -> ``(3, H, W)``, several frames -> a volume ``(1 or 3, F, H, W)``.

:func:`check_raw` names what would break training (NaN or inf pixels, an unsupported dtype, a tiny image, no
bands) with the fix; :func:`consistency_problems` flags a folder's files that differ from its majority. Bands
count from 0, as the array's first axis. Extras are imported when a file needs them, else :class:`MissingExtra`.
"""
from __future__ import annotations

import contextlib
import gzip
import importlib
import io
import os
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from selfsup.data.decode import DecodeError, PathOrBytes, _read_bytes, _refuse_truncated_images
from selfsup.registry import Registry

READERS: Registry[Callable[[bytes], np.ndarray]] = Registry(
    "raw image format", error=DecodeError, also="other image files decode to 8-bit RGB through selfsup.data.decode")
MAX_BANDS = 64  # the .npy layout rule: a side longer than this is spatial, never the band axis


class MissingExtra(ImportError):
    """A file needs an optional dependency that is not installed; the message says which extra to install."""

    def __init__(self, message: str, extra: str):
        super().__init__(message)
        self.extra = extra


def _require(module: str, extra: str, files: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"reading {files} files needs {module}: pip install 'selfsup[{extra}]'", extra) from None


def _tiff_chain_is_cut(tif) -> bool:
    """tifffile stops at a page offset past the end of the file with only a log message, which would hand back
    fewer bands than the file has. A complete chain ends with a next-page offset of 0."""
    fh, fmt = tif.filehandle, tif.tiff
    fh.seek(tif.pages.next_page_offset)
    raw = fh.read(fmt.offsetsize)
    return len(raw) < fmt.offsetsize or struct.unpack(fmt.offsetformat, raw)[0] != 0


@READERS.register(".tif")
def read_tiff(data: bytes) -> np.ndarray:
    """TIFF / GeoTIFF -> (C, H, W) or (C, D, H, W); see the module docstring for the band axis."""
    tifffile = _require("tifffile", "tiff", ".tif/.tiff")
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            series = tif.series[0]
            array, axes = series.asarray(), series.axes
            if _tiff_chain_is_cut(tif) or any(page is None for page in series.pages):
                raise DecodeError("truncated or corrupt TIFF: its page chain runs past the end of the file")
    except DecodeError:
        raise
    except Exception as e:  # tifffile raises ValueError, TiffFileError, struct.error, ... for cut files
        raise DecodeError(f"truncated or corrupt TIFF: {type(e).__name__}: {e}") from None
    return _tiff_channels_first(array, axes)


READERS.add(".tiff", read_tiff)


def _tiff_channels_first(array: np.ndarray, axes: str) -> np.ndarray:
    if len(axes) != array.ndim or "Y" not in axes or "X" not in axes:  # axes unnamed: the smallest holds the bands
        if array.ndim not in (2, 3):
            raise DecodeError(f"TIFF of shape {array.shape} without axis names: cannot tell its bands from its sides")
        return array[None] if array.ndim == 2 else np.moveaxis(array, int(np.argmin(array.shape)), 0)
    keep = [i for i, axis in enumerate(axes) if axis in "YX" or array.shape[i] > 1]
    array, axes = array.reshape([array.shape[i] for i in keep]), "".join(axes[i] for i in keep)
    bands = [axis for axis in axes if axis not in "YXZ"]
    if len(bands) > 1 or axes.count("Z") > 1:
        raise DecodeError(f"TIFF with axes {axes} (shape {array.shape}) has more than one band axis; "
                          "save one image (bands, Y, X) or volume (bands, Z, Y, X) per file")
    order = bands + [axis for axis in axes if axis == "Z"] + ["Y", "X"]
    array = np.transpose(array, [axes.index(axis) for axis in order])
    return array if bands else array[None]


def _png_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "1":
        return np.asarray(im).astype(np.uint8)
    if mode.startswith("I;16"):
        return np.asarray(im)
    if mode == "I":
        array = np.asarray(im)
        fits = array.size == 0 or (array.min() >= 0 and array.max() <= 65535)
        return array.astype(np.uint16) if fits else array
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")
    return np.asarray(im)


@READERS.register(".png")
def read_png(data: bytes) -> np.ndarray:
    """PNG -> (C, H, W) uint8 or uint16 (int32 for 32-bit values beyond 16 bits)."""
    if data[12:16] == b"IHDR" and data[24] == 16 and data[25] in (2, 4, 6):
        raise DecodeError("16-bit colour PNG: PIL reads only its top 8 bits; save it as .tif or .npy instead")
    _refuse_truncated_images()
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.load()
            array = _png_array(im)
    except Image.DecompressionBombError as e:
        raise DecodeError(f"image too large to decode safely ({e})") from None
    except Image.UnidentifiedImageError:
        raise DecodeError(f"not a PNG file; first bytes {data[:16]!r}") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for cut or corrupt data
        raise DecodeError(f"truncated or corrupt PNG: {type(e).__name__}: {e}") from None
    return array[None] if array.ndim == 2 else np.transpose(array, (2, 0, 1))


def _array_channels_first(array: np.ndarray) -> np.ndarray:
    """The .npy/.npz layout rule (module docstring)."""
    shape = array.shape
    if array.ndim in (2, 4):  # (H, W), or a volume (C, D, H, W) already
        return array[None] if array.ndim == 2 else array
    if array.ndim == 3 and shape[0] <= MAX_BANDS and shape[0] < min(shape[1:]):
        return array
    if array.ndim == 3 and shape[-1] <= MAX_BANDS:
        return np.transpose(array, (2, 0, 1))
    raise DecodeError(f"array of shape {shape} has no band axis of at most {MAX_BANDS}: save an image as (H, W), "
                      "(C, H, W) or (H, W, C), a volume as (C, D, H, W)")


@contextlib.contextmanager
def _numpy_errors(kind: str) -> Iterator[None]:
    try:
        yield
    except DecodeError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DecodeError(f"{kind} holds an object (pickled) array, which is never unpickled: save a numeric "
                              "array") from None
        raise DecodeError(f"corrupt {kind}: {e}") from None
    except Exception as e:  # BadZipFile, EOFError, OSError ... for cut files
        raise DecodeError(f"truncated or corrupt {kind}: {type(e).__name__}: {e}") from None


@READERS.register(".npy")
def read_npy(data: bytes) -> np.ndarray:
    with _numpy_errors(".npy"):
        array = np.load(io.BytesIO(data), allow_pickle=False)
    if not isinstance(array, np.ndarray):
        raise DecodeError("an .npz archive, not a .npy array: rename it to .npz")
    return _array_channels_first(array)


@READERS.register(".npz")
def read_npz(data: bytes) -> np.ndarray:
    with _numpy_errors(".npz"):
        archive = np.load(io.BytesIO(data), allow_pickle=False)
        if not hasattr(archive, "files"):
            raise DecodeError("a .npy array, not an .npz archive: rename it to .npy")
        with archive:
            keys = list(archive.files)
            if "image" not in keys and len(keys) != 1:
                raise DecodeError(f".npz with arrays {', '.join(keys) or '(none)'} and none named 'image': store "
                                  "one image per file, under the key 'image'")
            array = archive["image" if "image" in keys else keys[0]]
    return _array_channels_first(array)


@READERS.register(".nii")
def read_nifti(data: bytes) -> np.ndarray:
    """NIfTI-1 or NIfTI-2, plain or gzipped -> (1, H, W), (1, D, H, W) or (T, D, H, W)."""
    nibabel = _require("nibabel", "nifti", ".nii/.nii.gz")
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        header_size = {struct.unpack(order, data[:4])[0] for order in ("<i", ">i")}  # either byte order
        if not header_size & {348, 540}:
            raise DecodeError(f"not a NIfTI file; first bytes {data[:16]!r}")
        image_type = nibabel.Nifti2Image if 540 in header_size else nibabel.Nifti1Image
        array = np.asanyarray(image_type.from_bytes(data).dataobj)
    except DecodeError:
        raise
    except Exception as e:  # gzip's EOFError, nibabel's OSError "Expected N bytes", HeaderDataError, ...
        raise DecodeError(f"truncated or corrupt NIfTI: {type(e).__name__}: {' '.join(str(e).split())}") from None
    if array.ndim in (2, 3):
        return array.T[None]
    if array.ndim == 4:
        return np.transpose(array, (3, 2, 1, 0))
    raise DecodeError(f"{array.ndim}-D NIfTI of shape {array.shape}: only 2-D, 3-D and 4-D (X, Y, Z, T) are read")


READERS.add(".nii.gz", read_nifti)


@READERS.register(".dcm")
def read_dicom(data: bytes) -> np.ndarray:
    """DICOM -> (C, H, W) or, for several frames, (C, F, H, W); rescaled to float32 when the file says so."""
    pydicom = _require("pydicom", "dicom", ".dcm")
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except pydicom.errors.InvalidDicomError:
        raise DecodeError("not a DICOM file (no 'DICM' marker after the 128-byte preamble)") from None
    except Exception as e:
        raise DecodeError(f"truncated or corrupt DICOM: {type(e).__name__}: {e}") from None
    if not any(name in ds for name in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DecodeError("DICOM without pixel data (cut short, or not an image, e.g. a report)")
    try:
        pixels = ds.pixel_array
    except Exception as e:  # compressed transfer syntaxes need a decoder plugin; short pixel data
        raise DecodeError(f"cannot decode the DICOM pixel data (transfer syntax "
                          f"{getattr(ds.file_meta, 'TransferSyntaxUID', '?')}): {type(e).__name__}: {e}") from None
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None or intercept is not None:
        pixels = pixels.astype(np.float32) * np.float32(slope if slope is not None else 1.0)
        pixels += np.float32(intercept if intercept is not None else 0.0)
    frames = int(ds.get("NumberOfFrames") or 1)
    colour = pixels.ndim == (4 if frames > 1 else 3)  # samples come last: (H, W, 3) or (F, H, W, 3)
    return np.moveaxis(pixels, -1, 0) if colour else pixels[None]


RAW_EXTENSIONS: tuple[str, ...] = tuple(READERS)
_MAGIC = ((0, b"II*\x00", ".tif"), (0, b"MM\x00*", ".tif"), (0, b"II+\x00", ".tif"), (0, b"MM\x00+", ".tif"),
          (0, b"\x89PNG", ".png"), (0, b"\x93NUMPY", ".npy"), (0, b"PK\x03\x04", ".npz"), (0, b"\x1f\x8b", ".nii"),
          (344, b"n+1\x00", ".nii"), (4, b"n+2\x00", ".nii"), (128, b"DICM", ".dcm"))


def raw_extension(path: str | os.PathLike) -> str | None:
    """The registered extension ``path`` ends with (lower-cased, the longest match: ``.nii.gz``), or None."""
    name = os.path.basename(os.fspath(path)).lower()
    matches = [extension for extension in READERS if name.endswith(extension)]
    return max(matches, key=len) if matches else None


def _format_of(path_or_bytes: PathOrBytes, extension: str | None, data: bytes) -> str:
    if extension is not None:
        return "." + extension.lower().lstrip(".")
    if not isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        if (found := raw_extension(path_or_bytes)) is None:
            raise DecodeError(f"not a raw image file: the name ends with none of {', '.join(READERS)}")
        return found
    for offset, magic, found in _MAGIC:  # bytes carry no name: their first bytes tell the format
        if data[offset:offset + len(magic)] == magic:
            return found
    raise DecodeError(f"cannot tell the format of these bytes (first bytes {data[:16]!r}): pass extension=")


def read_raw(path_or_bytes: PathOrBytes, extension: str | None = None) -> np.ndarray:
    """A file (path or bytes) -> C-contiguous ``(C, H, W)`` or ``(C, D, H, W)`` array in its own dtype.

    ``extension`` (``".tif"``) overrides the path's; bytes without one are recognised by their first bytes.
    Raises :class:`DecodeError` for anything unreadable, :class:`MissingExtra` when an extra is missing."""
    data = _read_bytes(path_or_bytes)
    array = np.asarray(READERS.get(_format_of(path_or_bytes, extension, data))(data))
    if array.dtype.fields is not None:
        raise DecodeError(f"structured pixel type {array.dtype} (e.g. NIfTI RGB) is not read: save the bands as "
                          "a plain (C, H, W) array")
    # torch.from_numpy refuses big-endian data (NIfTI, .npy and TIFF may store it) and warns on read-only arrays
    return np.require(array, dtype=array.dtype.newbyteorder("="), requirements=["C", "W"])


_ACCEPTED = "integers (uint8 to uint64, int8 to int64) or floats (float16, float32, float64)"
_DTYPE_FIXES = {"c": "save the magnitude (np.abs) or the real and imaginary parts as two bands",
                "b": "save the mask as uint8 (0 and 1)", "O": "save a numeric array",
                "M": "dates are not pixel values: save the measured values", "m": "save durations as int64"}


def _dtype_problem(dtype: np.dtype) -> str | None:
    if dtype.kind in "ui" or (dtype.kind == "f" and dtype.itemsize <= 8):
        return None
    fix = _DTYPE_FIXES.get(dtype.kind, "convert it to one of these")
    return f"unsupported pixel dtype {dtype}: pixels must be {_ACCEPTED}; {fix}"


def _non_finite_problem(array: np.ndarray) -> str | None:
    bands = array.reshape(array.shape[0], -1)
    for what, is_bad in (("NaN", np.isnan), ("+/-inf", np.isinf)):
        counts = is_bad(bands).sum(axis=1)
        bad = np.flatnonzero(counts)
        if bad.size:
            more = f" (and in {bad.size - 1} more band{'s' * (bad.size > 2)})" if bad.size > 1 else ""
            count = int(counts[bad[0]])
            return (f"{count} {what} pixel{'s' * (count != 1)} (of {bands.shape[1]}) in band {bad[0]}{more}: fill "
                    "them, e.g. with the band's nodata value, or remove the file")
    return None


def check_raw(array: np.ndarray, min_side: int = 8) -> str | None:
    """None when ``array`` (as :func:`read_raw` returns it) can be trained on, else the reason with its fix: the
    first of a wrong layout, zero bands, an unsupported dtype, a height or width below ``min_side`` (a volume's
    depth may be small), NaN and +/-inf pixels."""
    if array.ndim not in (3, 4):
        return (f"array of shape {array.shape}: expected (C, H, W) for an image or (C, D, H, W) for a volume "
                "(read files with read_raw)")
    if 0 in array.shape[:-2]:
        return f"image of shape {array.shape} has 0 bands or slices (no pixel data): re-export it, or remove the file"
    if problem := _dtype_problem(array.dtype):
        return problem
    height, width = array.shape[-2:]
    if min(height, width) < min_side:
        return (f"image is {height}x{width} pixels, smaller than {min_side}x{min_side}: too small to take views "
                "from; remove the file, or export it at full size")
    return _non_finite_problem(array) if array.dtype.kind == "f" else None


@dataclass(frozen=True)
class RawInfo:
    """What a folder scan keeps of one file: band count, dtype name (``"uint16"``), shape of the (C, ...) array."""

    bands: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:  # spatial dimensions: 2 for an image, 3 for a volume
        return len(self.shape) - 1


def probe_raw(path: PathOrBytes, extension: str | None = None, min_side: int = 8) -> RawInfo:
    """:func:`read_raw` then :func:`check_raw`; raises :class:`DecodeError` with check_raw's reason when bad."""
    array = read_raw(path, extension)
    if problem := check_raw(array, min_side):
        raise DecodeError(problem)
    return RawInfo(int(array.shape[0]), array.dtype.name, tuple(int(side) for side in array.shape))


@dataclass(frozen=True)
class RawMajority:
    """The majority of a folder's files: band count, dtype, spatial dimensions (2 or 3), and how many files."""

    bands: int
    dtype: str
    ndim: int
    files: int


def consistency_problems(infos: dict[str, RawInfo]) -> tuple[RawMajority | None, dict[str, str]]:
    """The majority band count, dtype and dimensionality of a folder's files (None when there are none), and the
    reason with the fix for every file that differs, in path order. A tie goes to the first path in sorted order."""
    if not infos:
        return None, {}
    paths = sorted(infos)
    # most_common keeps equal counts in the order first seen, i.e. the first path in sorted order wins a tie
    (bands, with_bands), (dtype, with_dtype), (ndim, with_ndim) = (
        Counter(getattr(infos[p], field) for p in paths).most_common(1)[0] for field in ("bands", "dtype", "ndim"))
    majority, n = RawMajority(bands, dtype, ndim, len(paths)), len(paths)
    problems = {}
    for path in paths:
        info, reasons = infos[path], []
        if info.bands != bands:
            reasons.append(f"{info.bands} band{'s' * (info.bands != 1)} where the folder's images have {bands} "
                           f"(the majority: {with_bands} of {n} files); drop it or re-export it with {bands} bands")
        if info.dtype != dtype:
            reasons.append(f"{info.dtype} where the folder's images are {dtype} (the majority: {with_dtype} of "
                           f"{n} files); convert it to {dtype}")
        if info.ndim != ndim:
            reasons.append(f"{info.ndim}-D where the folder's images are {ndim}-D (the majority: {with_ndim} of "
                           f"{n} files); keep 2-D images and 3-D volumes in folders of their own")
        if reasons:
            problems[path] = "; also ".join(reasons)
    return majority, problems
