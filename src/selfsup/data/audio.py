"""Sounds (the field kind ``audio``): waveforms in memory, resampling to one rate, and folders of audio files.

:class:`WaveformSource` holds mono waveforms at :data:`~selfsup.views.audio.SAMPLE_RATE` (16 kHz), any lengths,
packed in one float32 buffer (fast to pickle into DataLoader workers); ``get_image(i)`` returns sample i as a
(1, L) float tensor in [-1, 1] (the field keeps the name ``image`` as volumes do, :data:`~selfsup.fields.AUDIO_FIELDS`).
Its ``mean`` / ``std`` are those of the evaluation spectrograms of (up to 256 of) its sounds, so the view
pipeline normalises spectrograms as it normalises pictures.

:func:`resample` is a windowed-sinc interpolator written with torch (a Hann-windowed sinc of 16 zero crossings a
side, its cut-off at the lower Nyquist frequency, so downsampling does not alias); no torchaudio.

:func:`open_audio_folder` reads ``.wav`` / ``.flac`` / ``.ogg`` files under a folder (class sub-folders and
``train/`` + ``test/`` split folders as image folders) through soundfile (the ``audio`` extra: ``pip install
'selfsup[audio]'``); without it PCM ``.wav`` files are read with the standard library's ``wave``. Every file is
decoded once at the scan: unreadable, zero-length and clipped ones (more than 1% of the samples at full scale)
and files of other formats are skipped and listed by name and reason (``bad_files.txt``), under the bad-file
policy of :mod:`selfsup.data.badfiles`.
"""
from __future__ import annotations

import hashlib
import math
import os
import wave
from pathlib import Path

import numpy as np
import torch

from selfsup.data.badfiles import check_bad_fraction
from selfsup.data.decode import DecodeError
from selfsup.data.folder import split_files, walk_files
from selfsup.data.sources import DataError, DataSplits
from selfsup.data.splits import stratified_holdout
from selfsup.fields import AUDIO_FIELDS
from selfsup.data.audio_frontend import SAMPLE_RATE, audio_eval_view

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
CLIPPED_FRACTION = 0.01  # more samples than this at full scale: a clipped recording, skipped


def resample(waveform: np.ndarray | torch.Tensor, orig_rate: int, new_rate: int = SAMPLE_RATE,
             zero_crossings: int = 16) -> torch.Tensor:
    """(L,) samples at ``orig_rate`` -> (ceil(L new / orig),) at ``new_rate``, by windowed-sinc interpolation."""
    x = torch.as_tensor(np.asarray(waveform, dtype=np.float32)).double()
    if orig_rate == new_rate or len(x) == 0:
        return x.float()
    g = math.gcd(int(orig_rate), int(new_rate))
    up, down = int(new_rate) // g, int(orig_rate) // g
    cutoff = min(1.0, up / down)  # of the input's Nyquist frequency
    half = int(math.ceil(zero_crossings / cutoff))  # taps a side, in input samples
    out = torch.empty(int(math.ceil(len(x) * up / down)), dtype=torch.float64)
    offsets = torch.arange(-half + 1, half + 1, dtype=torch.float64)
    chunk = max(1, (1 << 21) // (2 * half))
    for start in range(0, len(out), chunk):
        t = torch.arange(start, min(start + chunk, len(out)), dtype=torch.float64) * down / up
        taps = torch.floor(t)[:, None] + offsets[None]
        distance = t[:, None] - taps
        window = 0.5 * (1 + torch.cos(math.pi * (distance / half).clamp(-1, 1)))
        kernel = cutoff * torch.sinc(cutoff * distance) * window
        inside = (taps >= 0) & (taps < len(x))
        values = x[taps.clamp(0, len(x) - 1).long()] * inside
        out[start:start + len(t)] = (values * kernel).sum(1)
    return out.float()


class WaveformSource:
    """Mono waveforms at 16 kHz (see the module doc); labels and classes as image sources."""

    fields = AUDIO_FIELDS
    channels = 1
    channel_kind = "bands"  # measurements: no colour operation applies (audio views have their own)
    flips_preserve_labels = False  # a sound played backwards is another sound

    def __init__(self, waveforms: list[np.ndarray] | tuple[np.ndarray, np.ndarray], *, labels=None, classes=None,
                 name: str = "waveforms", bad_files=None, stats_of: "WaveformSource | None" = None):
        if isinstance(waveforms, tuple):  # (packed buffer, offsets): a take() of another source
            self._buffer, self._offsets = waveforms
        else:
            lengths = [len(w) for w in waveforms]
            self._offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            self._buffer = np.concatenate([np.asarray(w, np.float32) for w in waveforms]) if waveforms else \
                np.zeros(0, np.float32)
        self.labels = None if labels is None else np.asarray(labels, np.int64)
        self.classes = None if classes is None else list(classes)
        self.name, self.bad_files = name, list(bad_files or [])
        if len(self) == 0:
            raise DataError(f"{name}: no sounds")
        self.mean, self.std = (stats_of.mean, stats_of.std) if stats_of is not None else self._spectrogram_stats()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def get_image(self, index: int) -> torch.Tensor:
        lo, hi = self._offsets[index], self._offsets[index + 1]
        return torch.from_numpy(np.array(self._buffer[lo:hi], copy=True))[None]

    def _spectrogram_stats(self, size: int = 64) -> tuple[list[float], list[float]]:
        picks = np.linspace(0, len(self) - 1, min(len(self), 256)).astype(int)
        values = torch.stack([audio_eval_view(self.get_image(int(i)), size) for i in picks])
        return [float(values.mean())], [float(values.std().clamp_min(1e-3))]

    def take(self, indices: np.ndarray, name: str) -> "WaveformSource":
        parts = [self._buffer[self._offsets[i]:self._offsets[i + 1]] for i in indices]
        labels = None if self.labels is None else self.labels[indices]
        return WaveformSource(parts, labels=labels, classes=self.classes, name=name, stats_of=self)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(b"waveforms")
        for part in (self._buffer, self._offsets, self.labels if self.labels is not None else np.zeros(0)):
            digest.update(np.ascontiguousarray(part).tobytes())
        return digest.hexdigest()[:16]

    def __repr__(self) -> str:
        labelled = f", {len(self.classes)} classes" if self.classes is not None else ", unlabeled"
        return f"WaveformSource({self.name!r}, {len(self)} sounds{labelled})"


def _read_wave(path: str) -> tuple[np.ndarray, int]:
    with wave.open(path, "rb") as f:
        width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
        raw = f.readframes(f.getnframes())
    if width not in (1, 2, 4):
        raise DecodeError(f"{width * 8}-bit PCM needs soundfile (pip install 'selfsup[audio]')")
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    data = np.frombuffer(raw, dtype).astype(np.float32)
    data = (data - 128) / 128 if width == 1 else data / float(2 ** (8 * width - 1))
    return data.reshape(-1, channels), rate


def read_audio(path: str) -> tuple[np.ndarray, int]:
    """(mono float32 samples, sample rate) of an audio file; :class:`DecodeError` names what is wrong."""
    try:
        try:
            import soundfile  # optional: the audio extra (flac, ogg, every wav flavour)
        except ImportError:
            if not path.lower().endswith(".wav"):
                raise DecodeError("reading .flac / .ogg needs soundfile: pip install 'selfsup[audio]'") from None
            data, rate = _read_wave(path)
        else:
            data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except DecodeError:
        raise
    except Exception as error:  # any decoder failure is this file's problem, not the run's
        raise DecodeError(f"unreadable audio: {type(error).__name__}: {error}") from None
    if data.size == 0:
        raise DecodeError("zero-length audio (no samples)")
    mono = data.mean(axis=1)
    clipped = float(np.mean(np.abs(data) >= 0.999))
    if clipped > CLIPPED_FRACTION:
        raise DecodeError(f"clipped: {clipped:.1%} of the samples at full scale")
    return mono, int(rate)


def _load(path: str) -> tuple[np.ndarray | None, str | None]:
    try:
        mono, rate = read_audio(path)
        return resample(mono, rate).numpy(), None
    except DecodeError as error:
        return None, str(error)


def _split_roots(root: Path) -> dict[str, Path]:
    names = {d.name.lower(): d for d in root.iterdir() if d.is_dir()}
    test = names.get("test") or names.get("val")
    return {"train": names["train"], "test": test} if "train" in names and test is not None else {"train": root}


def scan_media(root: Path, extensions: tuple[str, ...], load, max_bad_fraction: float, what: str, group=None):
    """Per split (``train`` [, ``test``]): (kept values, their class names or None, bad files); every file of
    another format is a bad file too ("not a ... file"). ``load(path) -> (value or None, reason or None)``;
    ``group(split root) -> {file: entry}`` makes several files one entry (the frames of a frame folder)."""
    out, total, bad_all = {}, 0, []
    for split, split_root in _split_roots(root).items():
        files = walk_files(split_root)
        if group is not None:
            grouped = group(split_root)
            files = list(dict.fromkeys(grouped.get(f, f) for f in files))
        found = split_files(split_root, files, extensions)
        article = "an" if what[0] in "aeiou" else "a"
        bad = [(str(split_root / p), f"not {article} {what} file ({', '.join(extensions)}): skipped")
               for p in found.ignored]
        values, classes = [], []
        for rel, cls in zip(found.paths, found.class_of):
            value, reason = load(str(split_root / rel))
            if reason is None:
                values.append(value)
                classes.append(cls)
            else:
                bad.append((str(split_root / rel), reason))
        total += len(found.paths) + len(found.ignored)
        bad_all += bad
        out[split] = (values, classes if found.labelled and all(c is not None for c in classes) else None, bad)
    check_bad_fraction(bad_all, total, f"under {root}", max_bad_fraction, entry=f"{what} file")
    return out


def labelled_splits(scanned: dict, build, root: Path, seed: int, holdout_fraction: float) -> DataSplits:
    """DataSplits from :func:`scan_media`'s output; ``build(values, labels, classes, name, bad)`` makes a source."""
    classes = sorted({c for _, cls, _ in scanned.values() if cls for c in cls})
    index = {c: i for i, c in enumerate(classes)}
    sources = {}
    for split, (values, cls, bad) in scanned.items():
        if values:
            labels = None if cls is None else np.array([index[c] for c in cls], np.int64)
            sources[split] = build(values, labels, classes if cls else None, f"{root.name}/{split}", bad)
    if "train" not in sources:
        raise DataError(f"no readable files in the train split of {root}; see the bad files listed in bad_files.txt")
    train, test = sources["train"], sources.get("test")
    if test is None and train.labels is not None and holdout_fraction > 0 and len(train) >= 2:
        keep, held = stratified_holdout(train.labels, holdout_fraction, seed)
        bad = train.bad_files + (scanned["test"][2] if "test" in scanned else [])
        test = train.take(held, f"{root.name}/holdout")
        train = train.take(keep, f"{root.name}/train")
        train.bad_files = bad
    elif test is None and "test" in scanned:
        train.bad_files += scanned["test"][2]
    return DataSplits(train=train, test=test)


def open_audio_folder(root: str | os.PathLike, max_bad_fraction: float = 0.1, seed: int = 0,
                      holdout_fraction: float = 0.2) -> DataSplits:
    """A folder of audio files as :class:`WaveformSource` splits (layouts and bad files: the module doc)."""
    root = Path(root)
    scanned = scan_media(root, AUDIO_EXTENSIONS, _load, max_bad_fraction, "audio")

    def build(values, labels, classes, name, bad):
        return WaveformSource(values, labels=labels, classes=classes, name=name, bad_files=bad)

    return labelled_splits(scanned, build, root, seed, holdout_fraction)


__all__ = ["AUDIO_EXTENSIONS", "WaveformSource", "open_audio_folder", "read_audio", "resample", "scan_media"]
