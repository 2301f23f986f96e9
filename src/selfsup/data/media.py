"""Which folders hold sounds or videos rather than images: the dispatch of :func:`selfsup.data.open.open_data`.

A folder whose files are mostly audio files (:data:`~selfsup.data.audio.AUDIO_EXTENSIONS`) opens as sounds
(:func:`~selfsup.data.audio.open_audio_folder`); mostly video files or ``<name>.frames`` frame folders
(:data:`~selfsup.data.video.VIDEO_EXTENSIONS`), as videos (:func:`~selfsup.data.video.open_video_folder`). Any
other folder is left to the image folder reader. Files of another format in a sound or video folder are listed
as bad files.
"""
from __future__ import annotations

import os
from pathlib import Path

from selfsup.data.audio import AUDIO_EXTENSIONS, open_audio_folder
from selfsup.data.sources import DataSplits
from selfsup.data.video import FRAMES_SUFFIX, VIDEO_EXTENSIONS, open_video_folder


def media_kind(root: Path) -> str | None:
    """"audio", "video" or None (images, or nothing known) for the folder ``root``."""
    counts = {"audio": 0, "video": 0, "other": 0}
    for dirpath, dirnames, filenames in os.walk(root):
        frames = [d for d in dirnames if d.endswith(FRAMES_SUFFIX)]
        counts["video"] += len(frames)
        dirnames[:] = [d for d in dirnames if not d.endswith(FRAMES_SUFFIX) and not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            suffix = os.path.splitext(name)[1].lower()
            kind = "audio" if suffix in AUDIO_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else "other"
            counts[kind] += 1
    best = max(("audio", "video"), key=counts.get)
    return best if counts[best] > counts["other"] else None


def open_media_folder(root: Path, max_bad_fraction: float, seed: int, holdout_fraction: float) -> DataSplits | None:
    """The folder's sound or video splits, or None when it is not a folder of sounds or videos."""
    kind = media_kind(root)
    if kind == "audio":
        return open_audio_folder(root, max_bad_fraction, seed, holdout_fraction)
    if kind == "video":
        return open_video_folder(root, max_bad_fraction, seed, holdout_fraction)
    return None


__all__ = ["media_kind", "open_media_folder"]
