"""The ``sounds`` dataset (generated, *synthetic*): one-second 16 kHz clips of six kinds of sound under noise, the
embedded demo of the field kind ``audio``.

Classes (:data:`SOUND_CLASSES`), each at a random pitch (fundamental 200-2,000 Hz, log-uniform), with 1-3
harmonics of random strength:

- ``tone``: a steady tone with a slight vibrato;
- ``rising`` / ``falling``: an exponential chirp over 1-2 octaves, up or down;
- ``beeps``: the tone switched on and off 3-6 times a second;
- ``siren``: two tones (a ratio of 1.3-1.8) alternating 2-4 times a second;
- ``bursts``: band-limited noise bursts 3-6 times a second.

Each clip is set at a random level (-20 to -3 dB of full scale) under white noise at a random signal-to-noise
ratio of 0-20 dB, so loudness and noise carry no class information; pitch contour and rhythm do. Train and test
clips come from different generator streams (``2 seed`` and ``2 seed + 1``): the test split is held out. A view
sees 0.64 s of a clip (``data.image_size=64`` frames), so the rhythm classes need a model that reads time.
"""
from __future__ import annotations

import functools

import numpy as np

from selfsup.data.audio import WaveformSource
from selfsup.data.audio_frontend import SAMPLE_RATE
from selfsup.data.sources import DATASETS, DataError, DataSplits

SOUND_CLASSES = ["tone", "rising", "falling", "beeps", "siren", "bursts"]


def _harmonic(freq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A tone following the instantaneous frequency ``freq`` (L,), with 1-3 harmonics."""
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    out = np.sin(phase)
    for k in range(2, 2 + rng.integers(0, 3)):
        if np.max(freq) * k < SAMPLE_RATE / 2:
            out = out + rng.uniform(0.1, 0.6) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return out


def _gate(t: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """On/off at ``rate`` per second (duty 0.5, random phase), with 5 ms ramps against clicks."""
    cycle = (t * rate + rng.uniform()) % 1.0
    ramp = 0.005 * rate
    return np.clip(np.minimum(cycle, 0.5 - cycle) / ramp, 0, 1)


def _sound(kind: int, rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    f0 = float(np.exp(rng.uniform(np.log(200), np.log(2000))))
    if kind == 0:
        freq = f0 * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 7) * t))
        return _harmonic(freq, rng)
    if kind in (1, 2):
        octaves = rng.uniform(1, 2)
        ramp = t / t[-1] if kind == 1 else 1 - t / t[-1]
        return _harmonic(f0 / 2 * 2 ** (octaves * ramp), rng)
    if kind == 3:
        return _harmonic(np.full_like(t, f0), rng) * _gate(t, rng.uniform(3, 6), rng)
    if kind == 4:
        high = _gate(t, rng.uniform(2, 4), rng)
        return _harmonic(f0 * (1 + (rng.uniform(1.3, 1.8) - 1) * high), rng)
    spectrum = np.fft.rfft(rng.standard_normal(len(t)))
    freqs = np.fft.rfftfreq(len(t), 1 / SAMPLE_RATE)
    spectrum[(freqs < f0) | (freqs > f0 * rng.uniform(2, 4))] = 0
    noise = np.fft.irfft(spectrum, len(t))
    return noise / (np.abs(noise).max() + 1e-9) * _gate(t, rng.uniform(3, 6), rng)


def generate_sounds(n: int, seed: int, seconds: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clips: (waveforms float32 (n, seconds * 16000) in [-1, 1], labels int64 (n,)), balanced classes of
    :data:`SOUND_CLASSES`; deterministic for ``(n, seed, seconds)``."""
    labels = np.random.default_rng([seed, 1]).permutation(np.arange(n) % len(SOUND_CLASSES)).astype(np.int64)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    out = np.empty((n, len(t)), np.float32)
    for i, label in enumerate(labels):
        rng = np.random.default_rng([seed, 2, i])
        signal = _sound(int(label), rng, t)
        signal = signal / (np.abs(signal).max() + 1e-9)
        noise = rng.standard_normal(len(t)) * np.sqrt(np.mean(signal ** 2)) * 10 ** (-rng.uniform(0, 20) / 20)
        mixed = signal + noise
        out[i] = mixed / np.abs(mixed).max() * 10 ** (rng.uniform(-20, -3) / 20)
    return out, labels


@functools.lru_cache(maxsize=2)
def _sound_sources(n_train: int, n_test: int, seed: int) -> DataSplits:
    waves, labels = generate_sounds(n_train, 2 * seed)
    test_waves, test_labels = generate_sounds(n_test, 2 * seed + 1)
    train = WaveformSource(list(waves), labels=labels, classes=SOUND_CLASSES, name="sounds/train")
    test = WaveformSource(list(test_waves), labels=test_labels, classes=SOUND_CLASSES, name="sounds/test",
                          stats_of=train)
    return DataSplits(train=train, test=test)


@DATASETS.register("sounds")
def open_sounds(channels: int | None = None, n_train: int = 1200, n_test: int = 600, seed: int = 0) -> DataSplits:
    """The ``sounds`` dataset: :class:`~selfsup.data.audio.WaveformSource` train (1,200) and test (600) splits
    of one-second clips, normalised by the train spectrograms' mean and std."""
    if channels not in (None, 1):
        raise DataError(f"the sounds dataset is mono; leave data.channels unset or set it to 1, not {channels}")
    return _sound_sources(int(n_train), int(n_test), int(seed))


__all__ = ["SOUND_CLASSES", "generate_sounds", "open_sounds"]
