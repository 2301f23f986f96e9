"""The collapse monitor: embeddings (per-dimension std, effective rank) and teacher targets (uniform targets, the
DINO-style collapse where the loss stays at ln K), the trainer recording its metrics in metrics.jsonl and the
report drawing them."""
import json
import math

import numpy as np
import pytest
import torch

import selfsup
from selfsup.engine.monitor import CollapseMonitor, target_entropy
from selfsup.heads import DINOHead
from selfsup.losses.distillation import dino_targets, update_center
from selfsup.report.context import RunContext
from selfsup.report.sections import monitor_curves

K = 64


def test_target_entropy_is_ln_k_for_uniform_and_zero_for_one_hot():
    assert target_entropy(torch.full((4, K), 1 / K)) == pytest.approx(math.log(K), rel=1e-5)
    assert target_entropy(torch.eye(K)[:4]) == pytest.approx(0.0, abs=1e-5)


def _targets_of(head: DINOHead, features: torch.Tensor, steps: int = 100) -> torch.Tensor:
    """The head's DINO targets on ``features`` after its centre has followed its outputs for ``steps`` steps,
    at the paper's teacher temperature."""
    center = torch.zeros(1, K)
    with torch.no_grad():
        logits = head(features)
        for _ in range(steps):
            center = update_center(center, [logits], momentum=0.9)
    return dino_targets([logits], center, teacher_temp=0.04)[0]


def test_monitor_flags_a_head_with_uniform_targets():
    torch.manual_seed(0)
    head = DINOHead(16, K, hidden_dim=32, bottleneck_dim=8)
    features = torch.randn(32, 16)
    with torch.no_grad():  # the collapsed head: the same output for every input (its MLP ignores the features)
        for layer in head.mlp:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.normal_()
    targets = _targets_of(head, features)
    monitor = CollapseMonitor()
    metrics, warning = monitor(None, targets)
    assert metrics["monitor/target_entropy"] == pytest.approx(math.log(K), rel=1e-2)
    assert metrics["monitor/target_entropy_fraction"] > 0.99
    assert warning is not None and warning.startswith("teacher targets are uniform (entropy ")
    assert f"of ln K = {math.log(K):.3f}" in warning
    assert monitor(None, targets)[1] is None  # once per run


def test_monitor_does_not_flag_a_healthy_head():
    torch.manual_seed(0)
    head = DINOHead(16, K, hidden_dim=32, bottleneck_dim=8)
    features = torch.randn(32, 16)
    targets = _targets_of(head, features)
    metrics, warning = CollapseMonitor()(head(features).detach(), targets)
    assert warning is None, warning
    assert metrics["monitor/target_entropy_fraction"] < 0.5
    assert {"monitor/normalized_std", "monitor/effective_rank", "monitor/target_entropy"} <= metrics.keys()


def test_embedding_collapse_is_still_flagged_without_targets():
    metrics, warning = CollapseMonitor()(torch.ones(32, 8) + 1e-4 * torch.randn(32, 8))
    assert "monitor/target_entropy" not in metrics
    assert warning is not None and warning.startswith("representation collapse suspected")


def test_dino_run_records_target_entropy_in_metrics_jsonl(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, images=(rng.random((64, 16, 16, 3)) * 255).astype(np.uint8))
    run_dir = selfsup.train("dino", [
        f"data.source={path}", "data.image_size=16", "data.num_workers=0", "train.budget=null", "train.max_steps=2",
        "train.batch_size=16", "train.log_every=1", "train.monitor_every=1", "train.progress=false",
        "train.precision=fp32", "eval.enabled=false", "eval.report=false", f"runs_dir={tmp_path}", "name=dino",
        "backbone.options={widths: [8, 8, 16, 16], stem_stride: 1}", "method_options.out_dim=32",
        "method_options.hidden_dim=32", "method_options.bottleneck_dim=16", "method_options.num_local_crops=2",
        "method_options.local_size=8"])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(0 <= r["monitor/target_entropy"] <= math.log(32) + 1e-4 for r in records)
    assert all("monitor/target_entropy_fraction" in r for r in records)
    # the report's monitor section draws it beside the embedding measures
    html = monitor_curves(RunContext(run_dir))
    assert "teacher target entropy (nats; uniform targets: ln K)" in html and "effective rank" in html
