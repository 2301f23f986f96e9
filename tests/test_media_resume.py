"""Exact resume after SIGKILL for the video and audio masked methods (VideoMAE on clips, SSAST on spectrograms),
as tests/test_engine.py checks it for the image recipes: every logged loss and every weight identical to an
uninterrupted run."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from test_engine import logged_losses, run_beside_a_killed_twin, run_to_end

TINY = {
    "videomae": ["data.source=moving-digits", "backbone.options={embed_dim: 32, depth: 1, num_heads: 2, "
                 "sincos_pos_embed: true}", "method_options.decoder_dim=16", "method_options.decoder_depth=1",
                 "method_options.decoder_heads=2", "method_options.decoder_mask_ratio=0.5"],
    "ssast": ["data.source=sounds", "data.image_size=32", "backbone.options={img_size: 32, embed_dim: 32, depth: 1, "
              "num_heads: 2}", "method_options.head_dim=16"],
}
STEPS = 10


def args(tmp_path, recipe, name):
    return ["train", recipe, f"name={name}", f"runs_dir={tmp_path}", *TINY[recipe], f"train.max_steps={STEPS}",
            "train.budget=null", "train.progress=false", "train.log_every=1", "train.batch_size=16",
            "eval.enabled=false", "train.deterministic=true", "train.precision=fp32", "data.num_workers=1",
            "train.checkpoint_every=1"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(TINY))
def test_exact_resume_after_sigkill_for_video_and_audio(tmp_path, recipe):
    interrupted = tmp_path / "interrupted"
    run_beside_a_killed_twin(args(tmp_path, recipe, "straight"), args(tmp_path, recipe, "interrupted"), interrupted, 4)
    assert max(logged_losses(interrupted)) < STEPS
    code, _, err = run_to_end("train", "--resume", str(interrupted))
    assert code == 0, err[-2000:]
    expected, resumed = logged_losses(tmp_path / "straight"), logged_losses(interrupted)
    assert sorted(resumed) == list(range(1, STEPS + 1)) and resumed == expected
    weights_a = load_file(tmp_path / "straight" / "backbone.safetensors")
    weights_b = load_file(interrupted / "backbone.safetensors")
    assert weights_a.keys() == weights_b.keys() and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
