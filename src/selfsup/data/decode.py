"""Decode one image file into a ``uint8`` tensor of shape ``(channels, H, W)``.

Every kind of image a practitioner's folder holds is normal input here: RGB, grayscale, alpha, palette,
CMYK, 16-bit and float images, camera JPEGs with an EXIF orientation. Anything that cannot be decoded
(zero-byte, truncated, not an image, too large) raises :class:`DecodeError` whose ``str`` is the reason.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageFile
from torchvision.io import ImageReadMode, decode_jpeg

PathOrBytes = Union[str, os.PathLike, bytes, bytearray, memoryview]

# Image.Transpose operations equivalent to each EXIF orientation value (as PIL's ImageOps.exif_transpose).
_EXIF_ORIENTATION_TAG = 0x0112
_ORIENTATION_OPS = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, the weights PIL's convert("L") uses
_warned_truncated_flag = False


class DecodeError(Exception):
    """One input cannot be decoded; ``str(error)`` is the reason. ``path`` is set when a source raised it."""

    path: str | None = None


def _read_bytes(path_or_bytes: PathOrBytes) -> bytes:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
    else:
        try:
            data = Path(path_or_bytes).read_bytes()
        except FileNotFoundError:
            raise DecodeError("file not found (moved or deleted after the scan?)") from None
        except IsADirectoryError:
            raise DecodeError("is a directory, not an image file") from None
        except OSError as e:
            raise DecodeError(f"cannot read file: {e.strerror or e}") from None
    if len(data) == 0:
        raise DecodeError("empty file (0 bytes)")
    return data


def _refuse_truncated_images() -> None:
    """PIL's truncated-image tolerance is a process-wide flag; some libraries switch it on. Switch it off:
    a truncated file must be reported as bad, never silently decoded with a grey or black bottom half."""
    global _warned_truncated_flag
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        if not _warned_truncated_flag:
            _warned_truncated_flag = True
            warnings.warn(
                "PIL.ImageFile.LOAD_TRUNCATED_IMAGES was True (set by some other code); selfsup set it back to "
                "False so that truncated images are reported as bad files instead of being half-decoded.",
                RuntimeWarning,
                stacklevel=3,
            )


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Scale a single-channel array of any numeric type to uint8 (see :func:`decode_image` for the rules)."""
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            a = a * 255.0
        elif not (lo >= 0.0 and hi <= 255.0):
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    a = a.astype(np.int64)
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    if lo >= 0 and hi <= 65535:  # 16-bit data (also PIL's 32-bit "I" mode holding 16-bit PNG/TIFF values)
        return ((a * 255 + 32767) // 65535).astype(np.uint8)
    if hi == lo:
        return np.zeros(a.shape, np.uint8)
    return ((a - lo) * 255 // (hi - lo)).astype(np.uint8)


def _composite_on_black(rgba: np.ndarray) -> np.ndarray:
    """(H, W, C+1) uint8 with alpha last -> (H, W, C) uint8, colour * alpha (i.e. composited on black)."""
    colour = rgba[..., :-1].astype(np.uint16)
    alpha = rgba[..., -1:].astype(np.uint16)
    return ((colour * alpha + 127) // 255).astype(np.uint8)


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 array (H, W) for single-channel or (H, W, 3) for colour images."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode == "L":
        return np.asarray(im)
    if mode in ("I", "F") or mode.startswith("I;16"):
        if mode.startswith("I;16"):
            im = im.convert("I")  # handles both byte orders
        return _to_uint8(np.asarray(im))
    if mode == "LA" or mode == "La":
        la = np.asarray(im.convert("LA"))
        return _composite_on_black(la)[..., 0]
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in im.info
        if not has_alpha:
            return np.asarray(im.convert("RGB"))
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "RGBa"):
        return _composite_on_black(np.asarray(im.convert("RGBA")))
    if mode == "RGB":
        return np.asarray(im)
    # CMYK (incl. Adobe-inverted JPEGs, which PIL undoes), YCbCr, LAB, HSV, RGBX ...
    return np.asarray(im.convert("RGB"))


def decode_image(path_or_bytes: PathOrBytes, channels: int = 3) -> torch.Tensor:
    """Decode an image file (path or its bytes) into a ``uint8`` tensor ``(channels, H, W)``.

    - ``channels=3``: RGB; grayscale images are replicated to three channels.
    - ``channels=1``: luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B, as PIL's ``convert("L")``);
      grayscale images are used as they are.
    - Other channel counts raise :class:`DecodeError`: image files only provide gray or RGB; multi-channel
      data comes in through ``.npz`` arrays.

    Modes: alpha (``LA``, ``RGBA``, palette with transparency) is **composited on black** (colour is
    multiplied by alpha, so fully transparent pixels are black whatever colour they hide). CMYK, YCbCr and
    other colour modes are converted by PIL. 16-bit (``I;16``, ``I;16B``, and ``I`` holding values in
    0..65535) is scaled to 8 bit by ``round(v * 255 / 65535)``; ``I`` images with values outside 0..65535
    are rescaled from their min..max. Float (``F``) images in [0, 1] are scaled by 255, in [0, 255] used as
    they are, otherwise rescaled from their min..max; NaN/inf become 0. The EXIF orientation is applied.
    Multi-frame files (GIF, TIFF) give their first frame.

    Raises :class:`DecodeError` (``str`` is the reason) for zero-byte, unreadable, truncated, non-image or
    too-large (PIL decompression-bomb limit) files. Truncated files are never half-decoded.
    """
    data = _read_bytes(path_or_bytes)  # once, for both paths
    if channels == 3 and (tensor := _libjpeg(data)) is not None:
        return tensor
    array = _decode_array(data, channels, draft=False)
    if not array.flags.writeable or not array.flags.c_contiguous:  # np.asarray(PIL image) is read-only
        array = np.array(array, order="C")
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def check_image(path_or_bytes: PathOrBytes, channels: int = 3) -> tuple[int, int]:
    """Check that :func:`decode_image` would succeed, as cheaply as possible; return ``(H, W)`` of the decoded
    image. JPEGs are decoded at reduced scale (the whole entropy-coded stream is still read, so truncation
    and corruption are still detected). Raises :class:`DecodeError` like :func:`decode_image`."""
    array = _decode_array(path_or_bytes, channels, draft=True)
    return int(array.shape[0]), int(array.shape[1])


def _decode_array(path_or_bytes: PathOrBytes, channels: int, draft: bool) -> np.ndarray:
    if channels not in (1, 3):
        raise DecodeError(
            f"image files provide 1 (gray) or 3 (RGB) channels, not {channels}; "
            "bring multi-channel data as a .npz array instead"
        )
    data = _read_bytes(path_or_bytes)
    _refuse_truncated_images()
    try:  # (no warnings.catch_warnings here: it is not thread-safe, and scans decode in threads)
        with Image.open(io.BytesIO(data)) as im:
            orientation = 1
            try:
                orientation = int(im.getexif().get(_EXIF_ORIENTATION_TAG, 1))
            except Exception:  # a broken EXIF block does not make the pixels bad
                pass
            if draft and im.format == "JPEG":
                im.draft(None, (1, 1))
            im.load()
            array = _pil_to_array(im)
    except Image.DecompressionBombError as e:
        raise DecodeError(
            f"image too large to decode safely ({e}); raise PIL.Image.MAX_IMAGE_PIXELS if the file is trusted"
        ) from None
    except Image.UnidentifiedImageError:
        head = data[:16]
        hint = " (looks like text)" if _looks_like_text(head) else ""
        raise DecodeError(f"not a recognised image format{hint}; first bytes {head!r}") from None
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, struct.error, ... for corrupt data
        message = str(e) or type(e).__name__
        if "truncated" in message:
            raise DecodeError(f"truncated file ({message})") from None
        if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
            raise DecodeError(f"truncated file (JPEG without its end marker; {message})") from None
        raise DecodeError(f"corrupt or unsupported image: {type(e).__name__}: {message}") from None

    if channels == 1 and array.ndim == 3:
        array = np.clip(np.rint(array.astype(np.float32) @ _LUMA), 0, 255).astype(np.uint8)
    elif channels == 3 and array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if orientation in _ORIENTATION_OPS:
        array = _apply_orientation(array, orientation)
    return array


def _libjpeg(data: bytes) -> torch.Tensor | None:
    """A plain RGB JPEG (no EXIF rotation) as (3, H, W) uint8, decoded by torchvision's libjpeg-turbo binding:
    the same pixels as PIL's decoder (the same library with the same defaults; tested) without PIL's and
    numpy's copies, which is what decoding in the loader workers costs beside training on a few cores. None
    for anything else (gray, CMYK, rotated, truncated or corrupt files), which then takes PIL's path and its
    error messages. PIL reads the header first, so its decompression-bomb limit holds."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG" or im.mode != "RGB" or int(im.getexif().get(_EXIF_ORIENTATION_TAG, 1)) != 1:
                return None
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB).contiguous()
    except Exception:  # PIL's path below names what is wrong with the file
        return None


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to an (H, W) or (H, W, 3) uint8 array, exactly as PIL's exif_transpose."""
    im = Image.fromarray(array)
    for op in _ORIENTATION_OPS[orientation]:
        im = im.transpose(op)
    return np.asarray(im)


def _looks_like_text(head: bytes) -> bool:
    text = head.decode("utf-8", errors="ignore")
    return len(text) >= len(head) // 2 and all(ch.isprintable() or ch in "\r\n\t" for ch in text)
