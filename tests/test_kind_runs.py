"""`selfsup train` on tables, point clouds and graphs as a user has them (a CSV, a folder of .ply, an edge list
with a node-feature file): trains, exports, evaluates beside the baselines; SimCLR and VICReg on table and point
views through the same contract; exact resume after SIGKILL and a 2-process run for T-JEPA, Point-MAE and
GraphMAE (slow)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from selfsup.api import embed
from selfsup.config import ConfigError, build_config
from selfsup.eval.display import format_table
from selfsup.eval.evaluate import evaluate_any_backbone
from selfsup.run import train
from selfsup.export import load_backbone
from kind_utils import table_rows
from test_engine import logged_losses, run_beside_a_killed_twin, run_to_end
from test_kind_graphs import write_graph_folder
from test_kind_points import write_ply

COMMON = ["train.progress=false", "train.log_every=1", "data.num_workers=0", "train.precision=fp32",
          "eval.report=false", "train.budget=null", "train.epochs=null"]
TINY = {
    "tjepa": ["backbone.options={embed_dim: 32, depth: 1, num_heads: 2, num_registers: 1}",
              "method_options.predictor_dim=16", "method_options.predictor_depth=1", "method_options.predictor_heads=2"],
    "point-mae": ["backbone.options={num_groups: 8, group_size: 8, embed_dim: 32, depth: 1, num_heads: 2, "
                  "tokenizer_dim: 16}", "method_options.decoder_dim=16", "method_options.decoder_depth=1",
                  "method_options.decoder_heads=2"],
    "graphmae": ["backbone.options={hidden_dim: 16, num_layers: 2}"],
}


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    header, rows, labels = table_rows(80)
    (root / "table.csv").write_text(",".join(header + ["species"]) + "\n" + "".join(
        ",".join(r + [f"s{y}"]) + "\n" for r, y in zip(rows, labels)) + "1,2\n")  # the last row is ragged
    rng = np.random.default_rng(0)
    for c, scale in (("flat", (1, 1, 0.05)), ("round", (1, 1, 1))):
        (root / "clouds" / c).mkdir(parents=True)
        for i in range(12):
            write_ply(root / "clouds" / c / f"{i}.ply", rng.standard_normal((80, 3)) * scale, binary=i % 2 == 0)
    write_ply(root / "clouds" / "flat" / "empty.ply", np.zeros((0, 3)))
    write_graph_folder(root / "graph")
    return root


def overrides(recipe, source, steps=4):
    return [f"data.source={source}", f"train.max_steps={steps}", "train.batch_size=8", *COMMON, *TINY[recipe]]


@pytest.mark.parametrize("recipe,source,extra", [
    ("tjepa", "table.csv", ["data.label_column=species", "eval.protocols=[knn,linear,gbdt]"]),
    ("point-mae", "clouds", ["eval.protocols=[knn]"]),
    ("graphmae", "graph", ["eval.protocols=[knn]"]),
])
def test_train_on_user_files_exports_and_evaluates_beside_the_baselines(user_files, tmp_path, recipe, source, extra,
                                                                        capfd):
    cfg = build_config(recipe, overrides(recipe, user_files / source) + [f"runs_dir={tmp_path}", "name=run", *extra,
                                                                           "eval.report=true"])
    run = train(cfg)
    assert "warning: could not draw" not in "".join(capfd.readouterr())  # no picture of images asked of a non-image
    report = (run / "report.html").read_text()
    assert {"tjepa": "categories: a, b", "point-mae": "(x-z)", "graphmae": "spectral layout"}[recipe] in report
    payload = json.loads((run / "results.json").read_text())
    results, kind = payload["results"], {"tjepa": "table", "point-mae": "points", "graphmae": "graph"}[recipe]
    assert {"pretrained", "random_init", "raw_pixels"} <= set(results)
    assert payload["data"]["kind"] == kind and "raw features" in report  # the raw row named for the data's kind
    assert "knn_top1@20" in results["pretrained"]
    if recipe == "tjepa":
        assert "gbdt_top1" in results["raw_pixels"]  # the GBDT baseline on the raw features
    assert (run / "bad_files.txt").read_text().count("\n") == 1  # the ragged row, the empty .ply, the ghost node
    backbone = load_backbone(run)  # rebuilt from its spec: the data's layout (columns, node features) kept
    assert backbone.field_kind == kind
    # `selfsup eval --backbone RUN --data FILE` scores the saved encoder as the run did
    again = evaluate_any_backbone(str(run), str(user_files / source), cfg=cfg, out_dir=tmp_path / "eval")
    assert again["results"]["pretrained"]["knn_top1@20"] == results["pretrained"]["knn_top1@20"]
    # `selfsup embed` reads image files: refused at start, saying why and what to use instead
    with pytest.raises(ValueError, match=f"encodes {kind} data.*selfsup eval --backbone"):
        embed(run, user_files / source, tmp_path / "embeddings.npy", progress=False)


def test_the_raw_row_is_named_for_the_kind_of_data():
    results = {"pretrained": {"knn_top1@20": 0.9}, "raw_pixels": {"knn_top1@20": 0.8}}
    assert "raw features" in format_table(results, "table") and "raw pixels" not in format_table(results, "graph")
    assert "raw pixels" in format_table(results) and "raw pixels" in format_table(results, "image")


@pytest.mark.parametrize("method", ["simclr", "vicreg"])
@pytest.mark.parametrize("kind", ["table", "points"])
def test_joint_embedding_methods_train_on_table_and_point_views(user_files, tmp_path, method, kind):
    recipe = {"table": "tjepa", "points": "point-mae"}[kind]
    source = {"table": "table.csv", "points": "clouds"}[kind]
    options = ["method_options.projector_hidden_dim=16", "method_options.projector_out_dim=8"] if method == "simclr" \
        else ["method_options.expander_dim=16"]
    cfg = build_config(recipe, overrides(recipe, user_files / source, steps=3)[:-len(TINY[recipe])]
                       + [TINY[recipe][0], f"method={method}", "method_options={}", *options,
                          f"runs_dir={tmp_path}", "name=run", "eval.enabled=false"])
    run = train(cfg)
    losses = logged_losses(run)
    assert sorted(losses) == [1, 2, 3] and all(np.isfinite(v) for v in losses.values())


def test_a_method_of_another_kind_fails_at_start_with_the_fix(tmp_path):
    cfg = build_config("tjepa", ["data.source=digits", f"runs_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="tjepa trains on table data.*csv"):
        train(cfg)
    cfg = build_config("mae", ["data.source=table-wine", "backbone.name=table_transformer_tiny",
                               "backbone.options={}", f"runs_dir={tmp_path}", "name=mae"])
    with pytest.raises(ConfigError, match="mae masks or predicts image patches.*tjepa"):
        train(cfg)


def args(tmp_path, user_files, recipe, name, steps=8):
    source = {"tjepa": "table.csv", "point-mae": "clouds", "graphmae": "graph"}[recipe]
    return ["train", recipe, f"name={name}", f"runs_dir={tmp_path}", *overrides(recipe, user_files / source, steps),
            "eval.enabled=false", "train.deterministic=true", "train.checkpoint_every=1"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(TINY))
def test_exact_resume_after_sigkill(tmp_path, user_files, recipe):
    interrupted = tmp_path / "interrupted"
    run_beside_a_killed_twin(args(tmp_path, user_files, recipe, "straight"),
                             args(tmp_path, user_files, recipe, "interrupted"), interrupted, 3)
    code, _, err = run_to_end("train", "--resume", str(interrupted))
    assert code == 0, err[-2000:]
    expected, resumed = logged_losses(tmp_path / "straight"), logged_losses(interrupted)
    assert sorted(resumed) == list(range(1, 9)) and resumed == expected
    a, b = load_file(tmp_path / "straight" / "backbone.safetensors"), load_file(interrupted / "backbone.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(TINY))
def test_two_process_training(tmp_path, user_files, recipe):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "selfsup.cli",
           *args(tmp_path, user_files, recipe, "ddp", steps=4)[:-2], "train.batch_size=16"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp"
    assert sorted(logged_losses(run)) == [1, 2, 3, 4]
    assert json.loads((run / "env.json").read_text())["world_size"] == 2
    assert (run / "backbone.safetensors").exists()
