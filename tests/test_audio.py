"""Sounds (the field kind ``audio``): the mel filter bank and log-mel front end against independent numpy
references, resampling, the generated ``sounds`` set, audio views, folders of audio files with planted bad files,
SSAST and audio MAE end to end."""
from __future__ import annotations

import json
import math
import random
import wave

import numpy as np
import pytest
import torch

import selfsup
from selfsup.backbones import build_backbone
from selfsup.data import open_data
from selfsup.data.audio import WaveformSource, resample
from selfsup.data.audio_frontend import (DB_FLOOR, HOP_LENGTH, N_FFT, SAMPLE_RATE, WIN_LENGTH, log_mel,
                                         mel_filterbank, samples_for)
from selfsup.data.sounds import SOUND_CLASSES
from selfsup.methods import build_method
from selfsup.methods.ssast import masked_patch_info_nce
from selfsup.views import CropSpec
from selfsup.views.audio import make_audio_view
from selfsup.views.dataset import ViewCollate, ViewDataset, viewed_field
from selfsup.views.preprocess import Preprocess, eval_transform

TINY = ["train.max_steps=3", "train.batch_size=16", "train.precision=fp32", "eval.baselines=false",
        "eval.report=false", "data.num_workers=0", "train.progress=false", "eval.protocols=[knn]",
        "method_options.head_dim=16"]


# ------------------------------------------------------------------------- independent references (numpy)
def reference_mel(f, htk):
    """The mel scale by its textbook definition, one frequency at a time."""
    if htk:
        return 2595 * math.log10(1 + f / 700)
    return f * 3 / 200 if f < 1000 else 15 + 27 * math.log(f / 1000) / math.log(6.4)


def reference_filterbank(n_mels, htk, sr=SAMPLE_RATE, n_fft=N_FFT):
    """Triangles by loops: filter m rises from edge m to edge m+1 and falls to edge m+2 (Hz), Slaney-normalised."""
    top = reference_mel(sr / 2, htk)
    mels = [top * i / (n_mels + 1) for i in range(n_mels + 2)]
    lo = [0.0] * len(mels)
    for i, m in enumerate(mels):  # invert the scale by bisection, not by its closed form
        a, b = 0.0, sr / 2
        for _ in range(80):
            mid = (a + b) / 2
            a, b = (mid, b) if reference_mel(mid, htk) < m else (a, mid)
        lo[i] = (a + b) / 2
    out = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        left, centre, right = lo[m], lo[m + 1], lo[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if left < f < right:
                out[m, k] = (f - left) / (centre - left) if f <= centre else (right - f) / (right - centre)
        out[m] *= 2 / (right - left)
    return out


@pytest.mark.parametrize("htk", [False, True])
def test_mel_filterbank_matches_a_loop_reference(htk):
    ours = mel_filterbank(24, htk=htk).double().numpy()
    assert ours.shape == (24, N_FFT // 2 + 1)
    np.testing.assert_allclose(ours, reference_filterbank(24, htk), rtol=1e-6, atol=1e-9)


def test_log_mel_matches_a_numpy_framing_and_fft():
    gen = np.random.default_rng(0)
    t = np.arange(4000) / SAMPLE_RATE
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * gen.standard_normal(len(t))).astype(np.float32)
    ours = log_mel(torch.from_numpy(x)[None], 32)[0].double().numpy()
    # The reference: zero-pad by n_fft / 2 both sides, frame every hop, a periodic Hann window of 400 centred in
    # the 512-point frame, |rfft|^2 scaled so a full-scale sine's peak is 1, the filter bank of the loops above.
    padded = np.pad(x.astype(np.float64), N_FFT // 2)
    window = np.zeros(N_FFT)
    start = (N_FFT - WIN_LENGTH) // 2
    window[start:start + WIN_LENGTH] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN_LENGTH) / WIN_LENGTH)
    frames = [padded[i * HOP_LENGTH:i * HOP_LENGTH + N_FFT] * window for i in range(1 + len(x) // HOP_LENGTH)]
    power = np.abs(np.fft.rfft(np.array(frames), axis=1)) ** 2 * 4 / window.sum() ** 2
    mel = reference_filterbank(32, htk=False) @ power.T
    unit = np.clip((10 * np.log10(np.maximum(mel, 1e-10)) - DB_FLOOR) / -DB_FLOOR, 0, 1)
    assert ours.shape == unit.shape == (32, 26)
    np.testing.assert_allclose(ours, unit, atol=2e-5)
    # A full-scale sine's band is near 0 dB less the filter's area normalisation; silence is the floor.
    assert float(log_mel(torch.zeros(1, 4000), 32).max()) == 0.0


def test_resampling_keeps_a_tone_and_removes_what_the_new_rate_cannot_hold():
    t = np.arange(44100) / 44100
    kept = resample(np.sin(2 * np.pi * 1000 * t), 44100, 16000).numpy()
    assert len(kept) == 16000
    expected = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    assert np.abs(kept[200:-200] - expected[200:-200]).max() < 2e-3
    aliased = resample(np.sin(2 * np.pi * 11000 * t), 44100, 16000).numpy()  # above the new Nyquist (8 kHz)
    assert np.sqrt(np.mean(aliased[200:-200] ** 2)) < 0.01
    up = resample(np.sin(2 * np.pi * 500 * np.arange(8000) / 8000), 8000, 16000).numpy()
    assert np.abs(up[200:-200] - np.sin(2 * np.pi * 500 * np.arange(16000) / 16000)[200:-200]).max() < 2e-3


@pytest.fixture(scope="module")
def sounds():
    return open_data("sounds")


def test_sounds_dataset_is_a_held_out_audio_source(sounds):
    assert isinstance(sounds.train, WaveformSource) and viewed_field(sounds.train) == ("image", "audio")
    assert len(sounds.train) == 1200 and len(sounds.test) == 600 and sounds.train.classes == SOUND_CLASSES
    assert np.bincount(sounds.train.labels).tolist() == [200] * 6
    wave0 = sounds.train.get_image(0)
    assert wave0.shape == (1, SAMPLE_RATE) and wave0.dtype == torch.float32 and wave0.abs().max() <= 1
    assert sounds.test.mean == sounds.train.mean  # normalised by the train split's statistics
    assert not torch.equal(sounds.train.get_image(0), sounds.test.get_image(0))


def test_audio_views_crop_in_time_and_mask_deterministically(sounds):
    wave0 = sounds.train.get_image(3)
    plain, params = make_audio_view(wave0, CropSpec(jitter_p=0.0, noise_p=0.0), 32, random.Random(1))
    again, _ = make_audio_view(wave0, CropSpec(jitter_p=0.0, noise_p=0.0), 32, random.Random(1))
    assert plain.shape == (1, 32, 32) and params.numel() == 0 and torch.equal(plain, again)
    other, _ = make_audio_view(wave0, CropSpec(jitter_p=0.0, noise_p=0.0), 32, random.Random(2))
    assert not torch.equal(plain, other)  # another time crop
    masked, _ = make_audio_view(wave0, CropSpec(jitter_p=1.0, noise_p=0.0), 32, random.Random(5))
    assert (masked == 0).all(dim=2).any() or (masked == 0).all(dim=1).any()  # a SpecAugment band at the floor
    short, _ = make_audio_view(wave0[:, :500], CropSpec(jitter_p=0.0, noise_p=0.0), 32, random.Random(0))
    assert short.shape == (1, 32, 32)  # zero-padded


def test_view_dataset_collates_spectrograms_and_eval_transform_takes_waveforms(sounds):
    method = build_method("ssast", build_backbone("vit_audio_micro_cpu", 1), {"head_dim": 16})
    dataset = ViewDataset(sounds.train, method.views, 64, seed=0)
    pre = Preprocess(64, sounds.train.mean, sounds.train.std)
    batch = ViewCollate(pre)([dataset[(0, i)] for i in range(4)])
    assert batch["views"][0].shape == (4, 1, 64, 64) and batch["masks"]["mask"].shape == (4, 64)
    evaluated = eval_transform(sounds.test.get_image(0), 64, sounds.train.mean, sounds.train.std)
    assert evaluated.shape == (1, 64, 64) and torch.isfinite(evaluated).all()
    assert samples_for(64) == 63 * HOP_LENGTH


@pytest.mark.parametrize("encoder", ["mask_tokens", "drop"])
def test_ssast_discriminative_loss_picks_each_patch_among_its_own(encoder):
    target = torch.eye(8)[:6].expand(2, -1, -1)  # six distinct patches
    assert masked_patch_info_nce(target * 10, target) < 0.01
    assert masked_patch_info_nce(target.flip(1) * 10, target) > 5
    vit = build_backbone("vit_audio_micro_cpu", 1, embed_dim=32, depth=1, num_heads=2)
    method = build_method("ssast", vit, {"head_dim": 16, "encoder": encoder, "decoder_dim": 16, "decoder_depth": 1,
                                         "decoder_heads": 2})
    x = torch.randn(2, 1, 64, 64)
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[:, :48] = True
    masks = {"mask": mask, "masked": torch.arange(48).expand(2, -1), "visible": torch.arange(48, 64).expand(2, -1)}
    out = method({"views": [x], "masks": masks})
    out.loss.backward()
    assert torch.isfinite(out.loss) and {"nce", "mse", "patch_acc"} <= set(out.metrics)
    assert all(p.grad is not None for p in method.parameters() if p.requires_grad)
    if encoder == "drop":  # MAE-AST: the encoder never reads a hidden patch (its pixels change, its tokens do not)
        method.eval()
        changed = x.clone()
        changed[..., :48, :] = torch.randn(2, 1, 48, 64)  # rows 0-5 of the 8 x 8 grid: patches 0-47, all hidden
        tokens = [method.encode(v, masks)[3]["patches"] for v in (x, changed)]
        assert torch.allclose(*tokens)
    rows = method.reconstruct(x)
    assert rows["reconstruction"].shape == rows["masked"].shape == x.shape
    hidden = rows["masked"] == 0  # hidden patches at 0; the reconstruction keeps the visible ones
    assert hidden.float().mean() > 0.5 and torch.equal(rows["reconstruction"][~hidden], x[~hidden])


def write_wav(path, samples, rate=16000):
    data = np.clip(np.asarray(samples) * 32767, -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(data.tobytes())


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    """Real files: two classes of tones as 16 kHz and 22.05 kHz wav (and flac where soundfile is there), plus a
    zero-length wav, a PNG named .wav, a clipped recording and a text file."""
    root = tmp_path_factory.mktemp("sounds")
    gen = np.random.default_rng(0)
    for label, (name, freq) in enumerate((("low", 300.0), ("high", 2500.0))):
        (root / name).mkdir()
        for i in range(10):
            rate = 16000 if i % 2 else 22050
            t = np.arange(int(0.8 * rate)) / rate
            tone = 0.3 * np.sin(2 * np.pi * freq * (1 + 0.05 * i) * t) + 0.02 * gen.standard_normal(len(t))
            write_wav(root / name / f"{name}{i}.wav", tone, rate)
    (root / "low" / "empty.wav").write_bytes(b"")
    write_wav(root / "low" / "silent_header.wav", [], 16000)
    (root / "high" / "picture.wav").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    write_wav(root / "high" / "clipped.wav", np.clip(3 * np.sin(np.arange(8000) / 5), -1, 1))
    (root / "high" / "notes.txt").write_text("not a sound")
    return root


def test_an_audio_folder_opens_resampled_and_lists_each_bad_file(audio_folder):
    splits = open_data(str(audio_folder), max_bad_fraction=0.5)
    assert isinstance(splits.train, WaveformSource) and splits.train.classes == ["high", "low"]
    assert len(splits.train) + len(splits.test) == 20
    lengths = {splits.train.get_image(i).shape[-1] for i in range(len(splits.train))}
    assert lengths == {int(0.8 * 16000)}  # 22.05 kHz files resampled to 16 kHz
    bad = dict(splits.train.bad_files)
    reasons = {name.rsplit("/", 1)[-1]: reason for name, reason in bad.items()}
    assert set(reasons) == {"empty.wav", "silent_header.wav", "picture.wav", "clipped.wav", "notes.txt"}
    assert "zero-length" in reasons["silent_header.wav"] and "clipped" in reasons["clipped.wav"]
    assert "unreadable" in reasons["picture.wav"] and "not an audio file" in reasons["notes.txt"]


def test_ssast_trains_on_sounds_and_on_a_folder_listing_its_bad_files(audio_folder, tmp_path):
    run_dir = selfsup.train("ssast", [*TINY, f"runs_dir={tmp_path}", "name=ssast"])
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["steps"] == 3 and "knn_top1@20" in results["results"]["pretrained"]
    folder_run = selfsup.train("ssast", [*TINY, f"runs_dir={tmp_path}", "name=ssast-folder", "train.batch_size=4",
                                         f"data.source={audio_folder}", "data.max_bad_fraction=0.5"])
    listed = (folder_run / "bad_files.txt").read_text()
    for name in ("empty.wav", "silent_header.wav", "picture.wav", "clipped.wav", "notes.txt"):
        assert name in listed


def test_audio_mae_recipe_and_an_image_backbone_on_sounds_fails_at_start(tmp_path):
    run_dir = selfsup.train("audio-mae", [*TINY[:-1], f"runs_dir={tmp_path}", "name=amae",
                                          "method_options.decoder_dim=16", "method_options.decoder_depth=1",
                                          "method_options.decoder_heads=2"])
    assert (run_dir / "reconstructions.png").is_file()
    with pytest.raises(Exception, match="audio backbone"):
        selfsup.train("ssast", [*TINY, f"runs_dir={tmp_path}", "name=bad", "backbone.name=vit_micro_cpu"])
