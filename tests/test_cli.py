"""CLI and Python API on one tiny finished run: list, results.json with baselines, eval, export, load_backbone."""
import json
import subprocess
import sys

import pytest
import torch

import selfsup
from selfsup.cli import main

TINY = ["backbone.options={widths: [8, 16, 16, 32], stem_stride: 2}", "method_options.projector_hidden_dim=32",
        "train.budget=null", "train.max_steps=4", "train.batch_size=32", "train.progress=false", "data.num_workers=0",
        "eval.protocols=[knn]"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert main(["train", "demo", "--name", "tiny", f"runs_dir={runs}", *TINY]) == 0
    return runs / "tiny"


def test_list_shows_registries(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("simclr", "small_resnet", "resnet18", "timm:", "digits", "demo", "simclr-small"):
        assert name in out


def test_run_directory_layout(finished_run):
    for name in ("config.yaml", "env.json", "metrics.jsonl", "results.json", "checkpoints/last.pt",
                 "backbone.safetensors", "backbone.json", "train_summary.json"):
        assert (finished_run / name).exists(), name
    config = (finished_run / "config.yaml").read_text()
    assert "mean:" in config and "null" not in config.split("mean:")[1].split("\n")[0]  # resolved normalisation
    results = json.loads((finished_run / "results.json").read_text())
    assert set(results["results"]) == {"pretrained", "random_init", "raw_pixels"}
    for row in results["results"].values():
        assert 0 <= row["knn_top1@20"] <= 1 and 0 <= row["knn_top1@200"] <= 1


def test_eval_of_exported_backbone_reproduces_the_run(finished_run, capsys):
    before = json.loads((finished_run / "results.json").read_text())["results"]
    assert main(["eval", str(finished_run)]) == 0
    assert "pretrained" in capsys.readouterr().out
    after = json.loads((finished_run / "results.json").read_text())["results"]
    assert after == before


def test_export_and_api(finished_run, tmp_path):
    out = tmp_path / "bb.safetensors"
    assert main(["export", str(finished_run), "--format", "safetensors", "--out", str(out)]) == 0
    backbone = selfsup.load_backbone(finished_run)
    again = selfsup.load_backbone(out)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(backbone(x), again(x))
    assert backbone.meta["image_size"] == 32
    assert main(["export", str(finished_run), "--format", "torchvision"]) == 2  # small_resnet has no torchvision twin


def test_module_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "selfsup.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout and "export" in proc.stdout
