"""Views of sounds (the field kind ``audio``): a waveform in, a log-mel spectrogram out, made whole in stage 1.

The front end (16 kHz, 25 ms windows every 10 ms, the mel filter bank, dB to [0, 1]) is
:mod:`selfsup.data.audio_frontend`.

A view is square: ``size`` mel bands by ``size`` frames (``data.image_size``: 64 bands and 0.64 s with the
recipes), so every 2-D patch grid, mask strategy and ViT of the image methods serves spectrograms unchanged.
Per view, from the sample's generator (seed, epoch, index), in this order:

1. a random time crop of the waveform long enough for ``size`` frames (zero-padded at a random offset when the
   sound is shorter);
2. with probability ``jitter_p``, a gain of up to +-6 dB (recording level differs between sources);
3. with probability ``noise_p``, white noise at ``noise_std`` of full scale times a uniform draw;
4. the log-mel spectrogram;
5. with probability ``jitter_p``, SpecAugment (Park et al., Interspeech 2019): one frequency mask and one time
   mask, each up to an eighth of the view, set to the floor.

Masked methods (MAE, SSAST) ask for ``jitter_p=0`` (:func:`selfsup.methods.mae.plain_crop`): crop and noise only;
contrastive recipes get gain and SpecAugment as their "colour". The view is returned with an empty parameter
row: the collate step only normalises it (:class:`selfsup.views.dataset.ViewCollate`).
"""
from __future__ import annotations

import random

import torch

from selfsup.data.audio_frontend import audio_eval_view, fit_length, log_mel, samples_for
from selfsup.views.spec import CropSpec


def _spec_mask(spec: torch.Tensor, axis: int, gen: random.Random) -> None:
    width = gen.randint(0, max(1, spec.shape[axis] // 8))
    start = gen.randint(0, spec.shape[axis] - width)
    spec.narrow(axis, start, width).zero_()


def make_audio_view(waveform: torch.Tensor, spec: CropSpec, size: int, gen: random.Random,
                    kind: str = "audio") -> tuple[torch.Tensor, torch.Tensor]:
    """One view of a (1, L) waveform: float (1, size, size) log-mel in [0, 1] and an empty parameter row.
    Draws, in this order: crop start, gain, noise, SpecAugment (see the module doc)."""
    if waveform.ndim != 2 or waveform.shape[0] != 1:
        raise ValueError(f"an audio view needs a (1, L) mono waveform, got shape {tuple(waveform.shape)}")
    length = samples_for(size)
    start = gen.randint(min(0, waveform.shape[-1] - length), max(0, waveform.shape[-1] - length))
    clip = fit_length(waveform.float(), length, start)
    if gen.random() < spec.jitter_p:
        clip = clip * 10 ** (gen.uniform(-6, 6) / 20)
    if gen.random() < spec.noise_p:
        noise_gen = torch.Generator().manual_seed(gen.getrandbits(63))
        clip = clip + spec.noise_std * gen.random() * torch.randn(clip.shape, generator=noise_gen)
    view = log_mel(clip, size)
    if gen.random() < spec.jitter_p:
        _spec_mask(view, 1, gen)
        _spec_mask(view, 2, gen)
    return view, torch.zeros(0)


__all__ = ["audio_eval_view", "make_audio_view"]
