"""The training engine end to end on tiny data: exact resume after SIGKILL, clean stop on SIGTERM, NaN stop,
bad input files, config errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from selfsup.cli import main as cli_main

TINY_HEADS = ["method_options.projector_hidden_dim=32", "method_options.projector_out_dim=16"]
# Per recipe: method options that make its heads tiny (the resume test runs an EMA + queue method and a
# multi-crop method besides SimCLR).
TINY_METHOD = {
    "demo": TINY_HEADS,
    "moco-v2": [*TINY_HEADS, "method_options.queue_size=64", "method_options.momentum_schedule=true"],
    "dino": ["method_options.out_dim=32", "method_options.hidden_dim=32", "method_options.bottleneck_dim=16",
             "method_options.num_local_crops=2", "method_options.local_size=8",
             "method_options.freeze_last_layer=0.2", "method_options.teacher_temperature_warmup=0.5"],
    "mae": ["backbone.options={img_size: 16, embed_dim: 32, depth: 1, num_heads: 2, sincos_pos_embed: true}",
            "method_options.decoder_dim=16", "method_options.decoder_depth=1", "method_options.decoder_heads=2"],
    "ijepa": ["backbone.options={img_size: 16, embed_dim: 32, depth: 1, num_heads: 2, sincos_pos_embed: true, "
              "class_token: false, global_pool: avg}", "method_options.predictor_dim=16",
              "method_options.predictor_depth=1", "method_options.predictor_heads=2"],
}
TINY = [*TINY_HEADS, "backbone.options={widths: [8, 16, 16, 32], stem_stride: 1}", "train.budget=null", "train.progress=false", "train.log_every=1",
        "train.batch_size=32", "eval.enabled=false", "data.image_size=16"]


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    images = (rng.random((192, 16, 16, 3)) * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=images)
    return path


def selfsup(*args, env_extra=None, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "selfsup.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def run_to_end(*args):
    proc = selfsup(*args)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def logged_losses(run: Path) -> dict[int, float]:
    """step -> loss, the last record of each step (a resumed run re-logs the steps after its checkpoint)."""
    losses = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        losses[record["step"]] = record["loss"]
    return losses


def wait_for_step(run: Path, step: int, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count("\n") >= step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before step {step}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def run_beside_a_killed_twin(straight_args, twin_args, twin: Path, kill_after: int):
    """Start a run and its twin side by side (both deterministic; the suite gives each one thread, so each has
    a core), SIGKILL the twin once it has logged step ``kill_after``, and wait for the first run to finish."""
    straight = selfsup(*straight_args)
    proc = selfsup(*twin_args)
    try:
        wait_for_step(twin, kill_after, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err[-2000:]
    assert proc.returncode == -signal.SIGKILL  # really killed mid-run, not finished


def common(tmp_path, tiny_npz, name, steps=16, recipe="demo"):
    tiny = [*TINY[len(TINY_HEADS):], *TINY_METHOD[recipe]]
    return ["train", recipe, f"name={name}", f"runs_dir={tmp_path}", f"data.source={tiny_npz}", *tiny,
            f"train.max_steps={steps}", "train.deterministic=true", "train.precision=fp32", "data.num_workers=1",
            "train.checkpoint_every=1", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(TINY_METHOD))
def test_exact_resume_after_sigkill(tmp_path, tiny_npz, recipe):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run_beside_a_killed_twin(common(tmp_path, tiny_npz, "straight", recipe=recipe),
                             common(tmp_path, tiny_npz, "interrupted", recipe=recipe), interrupted, 5)
    assert max(logged_losses(interrupted)) < 16

    code, _, err = run_to_end("train", "--resume", str(interrupted))
    assert code == 0, err[-2000:]
    assert "resumed" in err
    expected, resumed = logged_losses(straight), logged_losses(interrupted)
    assert sorted(resumed) == list(range(1, 17))
    assert resumed == expected  # every logged loss identical, including the steps after the resume
    weights_a = load_file(straight / "backbone.safetensors")
    weights_b = load_file(interrupted / "backbone.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert (weights_a[key] == weights_b[key]).all(), key
    # The whole method state too: EMA teachers, queues, DINO's centre.
    import torch

    state_a = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)["method"]
    state_b = torch.load(interrupted / "checkpoints" / "last.pt", weights_only=False)["method"]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_cleanly(tmp_path, tiny_npz):
    args = common(tmp_path, tiny_npz, "term", steps=400)
    args[args.index("train.checkpoint_every=1")] = "train.checkpoint_every=1000"
    proc = selfsup(*args)
    run = tmp_path / "term"
    wait_for_step(run, 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "checkpoint saved" in err and "--resume" in err
    import torch

    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert 3 <= state["loop"]["step"] < 400
    assert not (run / "backbone.safetensors").exists()  # not finished: no final export yet


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, tiny_npz):
    args = common(tmp_path, tiny_npz, "nan", steps=20) + ["optim.name=sgd", "optim.lr=1e30", "optim.warmup=0"]
    code, _, err = run_to_end(*args)
    assert code == 3, err[-2000:]
    assert "loss is nan" in err.lower() or "loss is inf" in err.lower()
    assert "last good checkpoint" in err
    import torch

    state = torch.load(tmp_path / "nan" / "checkpoints" / "last.pt", weights_only=False)
    assert state["loop"]["step"] >= 1
    for tensor in state["method"].values():
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all()


def test_unknown_config_key_fails_at_start_with_suggestion(tmp_path, capsys):
    # In process: the CLI's own entry point and exit code, without a second interpreter's start-up.
    def train_fails(*overrides) -> str:
        assert cli_main(["train", "demo", f"runs_dir={tmp_path}", *overrides]) == 2
        return capsys.readouterr().err

    err = train_fails("train.batch_sise=64")
    assert "train.batch_sise" in err and "Did you mean 'train.batch_size'" in err
    assert not any(tmp_path.iterdir())  # failed before creating anything
    assert "method_options.temperature" in train_fails("method_options.temperatur=0.1")
    assert "simclr" in train_fails("method=simclrr")


def _bad_input_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "mixed"
    folder.mkdir()
    for i in range(40):  # enough good images for a few batches
        Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(folder / f"good{i}.png")
    (folder / "zero.jpg").write_bytes(b"")
    jpeg = folder / "full.jpg"
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(jpeg, quality=90)
    (folder / "truncated.jpg").write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    jpeg.unlink()
    (folder / "notes.jpg").write_text("this is not an image")
    Image.fromarray((rng.random((24, 24, 3)) * 255).astype(np.uint8)).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((rng.random((24, 24)) * 65535).astype(np.uint16)).save(folder / "deep16.png")
    Image.fromarray((rng.random((24, 24, 4)) * 255).astype(np.uint8), "RGBA").save(folder / "alpha.png")
    Image.fromarray((rng.random((24, 24)) * 255).astype(np.uint8), "L").save(folder / "gray.png")
    return folder


def test_bad_input_folder_trains_to_the_end(tmp_path):
    folder = _bad_input_folder(tmp_path)
    code, _, err = run_to_end("train", "demo", "name=bad", f"runs_dir={tmp_path}", f"data.source={folder}", *TINY,
                              "train.batch_size=16", "train.max_steps=4", "data.num_workers=0",
                              "data.max_bad_fraction=0.2")
    assert code == 0, err[-3000:]
    run = tmp_path / "bad"
    lines = (run / "bad_files.txt").read_text().splitlines()
    listed = {Path(line.split("\t")[0]).name: line.split("\t")[1] for line in lines}
    assert set(listed) == {"zero.jpg", "truncated.jpg", "notes.jpg"}
    assert all(reason.strip() for reason in listed.values())
    assert (run / "backbone.safetensors").exists()
    assert max(logged_losses(run)) == 4
