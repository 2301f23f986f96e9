"""Videos (the field kind ``video``): clips in memory, video files decoded with PyAV, folders of frames.

:class:`VideoSource` holds uint8 videos ``(C, T, H, W)`` of one frame size (lengths may differ), packed along time
in one buffer; ``get_image(i)`` returns video i whole, and the views (:mod:`selfsup.views.video`) sample clips of
it. ``mean`` / ``std`` are per channel over its frames, in [0, 1] units.

:func:`open_video_folder` reads a folder of video files (``.mp4``, ``.avi``, ``.mkv``, ``.mov``, ``.webm``; PyAV, the
``video`` extra: ``pip install 'selfsup[video]'``) and of frame folders (a sub-folder named ``<video>.frames``
holding one image per frame, in name order), with class sub-folders and ``train/`` + ``test/`` split folders as
image folders. Each video is decoded once at the scan, its frames resized to :data:`FRAME_SIZE` pixels square
and at most :data:`MAX_FRAMES` of them kept (evenly spaced) so that a folder fits in memory; unreadable,
truncated and zero-length videos and files of other formats are skipped and listed by name and reason.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.data.audio import labelled_splits, scan_media
from selfsup.data.decode import DecodeError, decode_image
from selfsup.data.sources import DataError, DataSplits
from selfsup.fields import VIDEO_FIELDS

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
FRAMES_SUFFIX = ".frames"
FRAME_SIZE = 32
MAX_FRAMES = 64


class VideoSource:
    """uint8 videos (C, T, H, W) of one channel count and frame size, any lengths (see the module doc)."""

    fields = VIDEO_FIELDS
    flips_preserve_labels = True

    def __init__(self, videos: list[np.ndarray] | tuple[np.ndarray, np.ndarray], *, labels=None, classes=None,
                 name: str = "videos", bad_files=None, stats_of: "VideoSource | None" = None,
                 flips_preserve_labels: bool = True):
        if isinstance(videos, tuple):  # (packed (T_total, C, H, W), offsets): a take() of another source
            self._frames, self._offsets = videos
        else:
            if not videos:
                raise DataError(f"{name}: no videos")
            shapes = {(v.shape[0], *v.shape[2:]) for v in videos}
            if len(shapes) != 1 or any(v.ndim != 4 or v.dtype != np.uint8 for v in videos):
                raise DataError(f"{name}: videos must be uint8 (C, T, H, W) of one channel count and frame size, got "
                                f"{sorted(shapes)[:3]}")
            self._offsets = np.concatenate([[0], np.cumsum([v.shape[1] for v in videos])]).astype(np.int64)
            self._frames = np.ascontiguousarray(np.concatenate([v.transpose(1, 0, 2, 3) for v in videos]))
        self.channels = int(self._frames.shape[1])
        self.channel_kind = "rgb" if self.channels == 3 else "gray"
        self.labels = None if labels is None else np.asarray(labels, np.int64)
        self.classes = None if classes is None else list(classes)
        self.name, self.bad_files = name, list(bad_files or [])
        self.flips_preserve_labels = flips_preserve_labels
        if stats_of is not None:
            self.mean, self.std = stats_of.mean, stats_of.std
        else:
            sample = self._frames[::max(1, len(self._frames) // 512)].astype(np.float32) / 255
            self.mean = [float(v) for v in sample.mean(axis=(0, 2, 3))]
            self.std = [float(max(v, 1e-3)) for v in sample.std(axis=(0, 2, 3))]

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def get_image(self, index: int) -> torch.Tensor:
        lo, hi = self._offsets[index], self._offsets[index + 1]
        return torch.from_numpy(np.array(self._frames[lo:hi], copy=True)).transpose(0, 1)

    def take(self, indices: np.ndarray, name: str) -> "VideoSource":
        videos = [self.get_image(int(i)).numpy() for i in indices]
        labels = None if self.labels is None else self.labels[indices]
        return VideoSource(videos, labels=labels, classes=self.classes, name=name, stats_of=self,
                           flips_preserve_labels=self.flips_preserve_labels)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(b"videos")
        for part in (self._frames, self._offsets, self.labels if self.labels is not None else np.zeros(0)):
            digest.update(np.ascontiguousarray(part).tobytes())
        return digest.hexdigest()[:16]

    def __repr__(self) -> str:
        labelled = f", {len(self.classes)} classes" if self.classes is not None else ", unlabeled"
        return f"VideoSource({self.name!r}, {len(self)} videos, {tuple(self._frames.shape[1:])} frames{labelled})"


def _fit_frames(frames: list[np.ndarray]) -> np.ndarray:
    """(T, H, W, 3) uint8 frames -> (3, T', FRAME_SIZE, FRAME_SIZE), T' <= MAX_FRAMES evenly spaced."""
    if not frames:
        raise DecodeError("zero-length video (no frames decoded)")
    if len(frames) > MAX_FRAMES:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, MAX_FRAMES).round().astype(int)]
    clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    clip = F.interpolate(clip, size=(FRAME_SIZE, FRAME_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return clip.round().clamp(0, 255).to(torch.uint8).transpose(0, 1).numpy()


def read_video(path: str) -> np.ndarray:
    """A video file's frames as (3, T, FRAME_SIZE, FRAME_SIZE) uint8; :class:`DecodeError` says what is wrong."""
    try:
        import av  # optional: the video extra
    except ImportError:
        raise DecodeError("decoding video files needs PyAV: pip install 'selfsup[video]' (or give folders of "
                          "frames, <name>.frames/)") from None
    if os.path.getsize(path) == 0:
        raise DecodeError("zero-length file")
    frames = []
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise DecodeError("no video stream")
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
    except DecodeError:
        raise
    except Exception as error:  # a corrupt or truncated container is this file's problem
        if not frames:
            raise DecodeError(f"unreadable video: {type(error).__name__}: {error}") from None
        raise DecodeError(f"truncated video: decoding failed after {len(frames)} frames "
                          f"({type(error).__name__}: {error})") from None
    return _fit_frames(frames)


def read_frames(folder: str) -> np.ndarray:
    """A ``<video>.frames`` folder's images, in name order, as (3, T, FRAME_SIZE, FRAME_SIZE) uint8."""
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    frames = []
    for n in names:
        image = decode_image(os.path.join(folder, n), channels=3)  # DecodeError names the bad frame
        frames.append(image.permute(1, 2, 0).numpy())
    return _fit_frames(frames)


def _load(path: str) -> tuple[np.ndarray | None, str | None]:
    try:
        return (read_frames(path) if path.endswith(FRAMES_SUFFIX) else read_video(path)), None
    except DecodeError as error:
        return None, str(error)
    except Exception as error:  # a frame of another size, an unreadable folder
        return None, f"{type(error).__name__}: {error}"


def _frame_folders(root: Path) -> dict[str, str]:
    """{path of each frame inside a ``.frames`` folder: the folder}, relative to ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath.endswith(FRAMES_SUFFIX):
            rel = Path(dirpath).relative_to(root).as_posix()
            out.update({f"{rel}/{f}": rel for f in filenames})
            dirnames[:] = []
    return out


def open_video_folder(root: str | os.PathLike, max_bad_fraction: float = 0.1, seed: int = 0,
                      holdout_fraction: float = 0.2) -> DataSplits:
    """A folder of video files and frame folders as :class:`VideoSource` splits (layouts: the module doc)."""
    root = Path(root)
    scanned = scan_media(root, VIDEO_EXTENSIONS + (FRAMES_SUFFIX,), _load, max_bad_fraction, "video",
                         group=_frame_folders)

    def build(values, labels, classes, name, bad):
        return VideoSource(values, labels=labels, classes=classes, name=name, bad_files=bad)

    return labelled_splits(scanned, build, root, seed, holdout_fraction)


__all__ = ["FRAME_SIZE", "MAX_FRAMES", "VIDEO_EXTENSIONS", "VideoSource", "open_video_folder", "read_frames",
           "read_video"]
