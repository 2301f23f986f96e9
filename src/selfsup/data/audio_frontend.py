"""The audio front end: a 16 kHz waveform to a log-mel spectrogram in [0, 1], with ``torch.stft`` and a mel filter
bank written here (no torchaudio).

The front end is fixed, so that training views (:mod:`selfsup.views.audio`), the evaluation transform and every
audio source (:mod:`selfsup.data.audio`) agree without a setting to carry: 16 kHz mono, a 25 ms Hann window (400
samples) in a 512-point FFT every 10 ms (160 samples), the framing of AST / SSAST (Gong et al., "SSAST:
Self-Supervised Audio Spectrogram Transformer", AAAI 2022). ``torch.stft`` gives the power spectrum, scaled so
that a full-scale sine's peak bin is 1; :func:`mel_filterbank` folds it onto ``n_mels`` triangular bands (Slaney's
auditory-toolbox mel scale with area normalisation, librosa's default, or the HTK formula); the power in dB is
mapped from [-80, 0] dB to [0, 1] (:data:`DB_FLOOR`), so a spectrogram is a 1-channel float picture in the pixel
contract of :mod:`selfsup.data.pixels`. It sits with the data because a spectrogram is how a sound is decoded
for a model: sources compute their normalisation statistics with it.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

SAMPLE_RATE = 16_000
N_FFT = 512
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
DB_FLOOR = -80.0  # dB below a full-scale sine that maps to 0


def hz_to_mel(freqs: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """The mel scale: HTK's ``2595 log10(1 + f / 700)``, or Slaney's (linear below 1 kHz at 3 mel per 200 Hz,
    logarithmic above, 27 mel per factor 6.4)."""
    freqs = np.asarray(freqs, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + freqs / 700.0)
    linear = freqs / (200.0 / 3)
    log_step = math.log(6.4) / 27.0
    return np.where(freqs >= 1000.0, 15.0 + np.log(np.maximum(freqs, 1e-10) / 1000.0) / log_step, linear)


def mel_to_hz(mels: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    log_step = math.log(6.4) / 27.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(log_step * (mels - 15.0)), mels * (200.0 / 3))


@functools.lru_cache(maxsize=8)
def mel_filterbank(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, f_min: float = 0.0,
                   f_max: float | None = None, htk: bool = False, slaney_norm: bool = True) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, centres equally spaced on the mel scale between ``f_min``
    and ``f_max`` (default: Nyquist); ``slaney_norm`` divides each by half its width in Hz (equal area)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min, htk), hz_to_mel(f_max, htk), n_mels + 2), htk)
    widths = np.diff(edges)
    rising = (fft_freqs[None] - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - fft_freqs[None]) / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if slaney_norm:
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


@functools.lru_cache(maxsize=2)
def _window() -> torch.Tensor:
    return torch.hann_window(WIN_LENGTH, periodic=True)


def log_mel(waveform: torch.Tensor, n_mels: int) -> torch.Tensor:
    """(..., L) waveform at :data:`SAMPLE_RATE` -> (..., n_mels, 1 + L // HOP_LENGTH) log-mel power in [0, 1]
    (centred frames, zero padding at the ends)."""
    window = _window()
    spec = torch.stft(waveform.float().reshape(-1, waveform.shape[-1]), N_FFT, HOP_LENGTH, WIN_LENGTH, window,
                      center=True, pad_mode="constant", return_complex=True)
    power = (spec.abs() / window.sum()) ** 2 * 4  # a full-scale sine's peak bin at 1 (0 dB)
    mel = mel_filterbank(n_mels) @ power
    db = 10.0 * torch.log10(mel.clamp_min(1e-10))
    unit = ((db - DB_FLOOR) / -DB_FLOOR).clamp_(0, 1)
    return unit.reshape(*waveform.shape[:-1], n_mels, unit.shape[-1])


def samples_for(frames: int) -> int:
    """Waveform samples that give ``frames`` centred frames."""
    return (frames - 1) * HOP_LENGTH


def fit_length(waveform: torch.Tensor, length: int, start: int) -> torch.Tensor:
    """``length`` samples of (1, L) from ``start`` (a negative start or a short sound: zero padding)."""
    out = waveform.new_zeros(waveform.shape[0], length)
    lo, hi = max(start, 0), min(start + length, waveform.shape[-1])
    if hi > lo:
        out[:, lo - start:hi - start] = waveform[:, lo:hi]
    return out


def audio_eval_view(waveform: torch.Tensor, size: int) -> torch.Tensor:
    """The evaluation view of a (1, L) waveform: the centred ``size`` frames' log-mel, (1, size, size) in [0, 1]."""
    length = samples_for(size)
    return log_mel(fit_length(waveform.float(), length, (waveform.shape[-1] - length) // 2), size)


__all__ = ["DB_FLOOR", "HOP_LENGTH", "N_FFT", "SAMPLE_RATE", "WIN_LENGTH", "audio_eval_view", "fit_length",
           "hz_to_mel", "log_mel", "mel_filterbank", "mel_to_hz", "samples_for"]
