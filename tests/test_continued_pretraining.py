"""Continued pre-training: the wsd / infinite schedules, layer-wise learning-rate decay, the frozen first phase of
a backbone that starts from weights, the step-0 kNN row, and extending a finished run without a re-warm."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from selfsup import api
from selfsup.backbones import build_backbone
from selfsup.backbones.layers import backbone_layers
from selfsup.config import ConfigError, build_config
from selfsup.engine.lr import LearningRate
from selfsup.engine.optim import param_groups
from selfsup.runs import START_BACKBONE_DIR, decay_checkpoint_path
from selfsup.schedules import warmup_stable_decay

TINY = ["method_options.projector_hidden_dim=32", "method_options.projector_out_dim=16",
        "backbone.options={widths: [8, 8, 16, 16], stem_stride: 1}", "train.budget=null", "train.progress=false",
        "train.log_every=1", "train.batch_size=32", "data.image_size=16", "train.precision=fp32",
        "train.deterministic=true", "data.num_workers=0", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]",
        "eval.report=false"]


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=(rng.random((128, 16, 16, 3)) * 255).astype(np.uint8))
    return path


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_wsd_holds_the_peak_then_decays_and_does_not_depend_on_the_length():
    values = [warmup_stable_decay(p / 100, 0.1, 0.2, 0.0) for p in range(101)]
    assert values[5] == pytest.approx(0.5) and values[10] == 1.0 and values[50] == 1.0 and values[80] == 1.0
    assert values[100] == pytest.approx(0.0) and all(a >= b for a, b in zip(values[80:], values[81:]))
    # infinite: a cosine cool-down to the constant level, then constant, then the anneal
    infinite = [warmup_stable_decay(p / 100, 0.1, 0.2, 0.0, cooldown=0.2, constant_fraction=0.5) for p in range(101)]
    assert infinite[10] == 1.0 and infinite[20] == pytest.approx(0.75) and infinite[30] == infinite[79] == 0.5
    # the same step before the decay has the same rate in a run of 100 and of 160 steps: an extension re-uses it
    for step in range(10, 80):
        assert warmup_stable_decay(step / 100, 0.1 * 100 / 160 * 1.6, 0.2, 0.0) == \
            warmup_stable_decay(step / 160, 0.1 * 100 / 160, 0.2, 0.0) == 1.0


def test_layer_decay_scales_each_backbone_layer_and_leaves_the_heads():
    backbone = build_backbone("vit_micro_cpu")
    model = nn.ModuleDict({"backbone": backbone, "head": nn.Linear(4, 4)})
    groups = param_groups(model, 0.1, True, backbone=backbone, layer_decay=0.5)
    layers, top = backbone_layers(backbone)
    assert top == 5 and layers["model.patch_embed.proj.weight"] == 0 and layers["model.blocks.2.mlp.fc1.weight"] == 3
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scale[id(model["head"].weight)] == 1.0
    assert scale[id(backbone.model.blocks[2].mlp.fc1.weight)] == 0.5 ** 2
    assert scale[id(backbone.model.patch_embed.proj.weight)] == 0.5 ** 5
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # a ResNet: the stem is layer 0, stage k is layer k
    layers, top = backbone_layers(build_backbone("resnet18"))
    assert top == 5 and layers["model.conv1.weight"] == 0 and layers["model.layer3.0.conv1.weight"] == 3


def test_freeze_default_follows_backbone_weights():
    assert LearningRate.from_config(build_config("demo")).freeze == 0.0
    assert LearningRate.from_config(build_config("demo", ["backbone.weights=x.safetensors"])).freeze == 0.05
    lr = LearningRate.from_config(build_config("demo", ["optim.freeze_backbone=0.2", "optim.warmup=0.1"]))
    assert lr.backbone_factor(0.1) == 0.0 and lr.backbone_factor(0.25) == pytest.approx(0.5)
    assert lr.backbone_factor(0.4) == 1.0


def _trainable(state: dict) -> dict:
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


def test_a_run_from_weights_holds_the_backbone_first_and_scores_its_start(tmp_path):
    first = api.train("demo", [*TINY, "data.source=digits", f"runs_dir={tmp_path}", "name=first",
                               "train.max_steps=4", "eval.enabled=false"])
    frozen = api.train("demo", [*TINY, "data.source=digits", f"runs_dir={tmp_path}", "name=frozen",
                                "train.max_steps=4", f"backbone.weights={first}", "optim.freeze_backbone=0.9",
                                "eval.protocols=[knn]", "eval.baselines=false"])
    start = load_file(str(frozen / START_BACKBONE_DIR / "backbone.safetensors"))
    assert all(torch.equal(start[k], v) for k, v in _trainable(load_file(str(first / "backbone.safetensors"))).items())
    end = load_file(str(frozen / "backbone.safetensors"))
    assert all(torch.equal(end[k], v) for k, v in _trainable(start).items())  # every step was in the frozen phase
    losses = [r["loss"] for r in records(frozen)]
    assert losses[-1] != losses[0]  # ... while the heads learned
    results = json.loads((frozen / "results.json").read_text())["results"]
    # the step-0 row is scored beside the trained one (equal weights; batch-norm statistics followed the data)
    assert set(results) == {"pretrained", "start"} and 0 < results["start"]["knn_top1@20"] <= 1


def test_extending_a_finished_wsd_run_continues_before_its_decay(tmp_path, tiny_npz):
    common = [*TINY, f"data.source={tiny_npz}", f"runs_dir={tmp_path}", "optim.warmup=0.1", "optim.decay=0.25"]
    run = api.train("demo", [*common, "name=wsd", "optim.schedule=wsd", "train.max_steps=12"])
    assert decay_checkpoint_path(run).is_file()
    first = records(run)
    peak = max(r["lr"] for r in first)
    api.train(resume=run, overrides=["train.max_steps=+8"])
    extended = records(run)
    steps = [r["step"] for r in extended]
    assert steps == list(range(1, 21))  # one history: the first decay's steps were left behind
    assert [r["step"] for r in map(json.loads, (run / "metrics.superseded.jsonl").read_text().splitlines())] == \
        [10, 11, 12]
    assert extended[:9] == first[:9]
    by_step = {r["step"]: r for r in extended}
    # no re-warm: from the branch (step 9) to the new decay (15 of 20) the rate stays at the peak
    assert all(by_step[s]["lr"] == pytest.approx(peak) for s in range(10, 16))
    assert by_step[20]["lr"] < 0.2 * peak
    # no loss spike where the extension joins the first run
    before = [by_step[s]["loss"] for s in range(5, 10)]
    assert by_step[10]["loss"] < max(before) + 0.1 * (max(before) - min(before) + 1e-3) + 0.05
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 20


def test_extension_of_a_cosine_run_or_of_an_unset_key_fails_with_the_fix(tmp_path, tiny_npz):
    run = api.train("demo", [*TINY, f"data.source={tiny_npz}", f"runs_dir={tmp_path}", "name=cos",
                             "train.max_steps=4", "eval.enabled=false"])
    with pytest.raises(ConfigError, match="optim.schedule=wsd"):
        api.train(resume=run, overrides=["train.max_steps=+4"])
    with pytest.raises(ConfigError, match="train.max_steps=\\+"):
        api.train(resume=run, overrides=["train.budget=+1m"])
    with pytest.raises(ConfigError, match="--resume RUN"):
        build_config("demo", ["train.budget=+10m"])
