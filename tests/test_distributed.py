"""Distributed semantics: N processes x batch B must equal 1 process x batch N*B (docs/ARCHITECTURE.md, "Distributed semantics")."""
import os
import subprocess
import sys
import json

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel

from distributed_utils import run_distributed
from selfsup.losses import nt_xent

pytestmark = pytest.mark.distributed

BATCH, IN_DIM, OUT_DIM, WORLD = 4, 6, 5, 2


def _global_inputs():
    gen = torch.Generator().manual_seed(0)
    x_a = torch.randn(WORLD * BATCH, IN_DIM, generator=gen)
    x_b = torch.randn(WORLD * BATCH, IN_DIM, generator=gen)
    projector = torch.nn.Linear(IN_DIM, OUT_DIM)
    torch.nn.init.normal_(projector.weight, generator=gen)
    torch.nn.init.normal_(projector.bias, generator=gen)
    return x_a, x_b, projector.state_dict()


def _ddp_nt_xent(rank, world_size):
    x_a, x_b, state = _global_inputs()
    projector = torch.nn.Linear(IN_DIM, OUT_DIM)
    projector.load_state_dict(state)
    model = DistributedDataParallel(projector)
    local = slice(rank * BATCH, (rank + 1) * BATCH)
    x_a_local = x_a[local].clone().requires_grad_(True)
    loss = nt_xent(model(x_a_local), model(x_b[local]), temperature=0.3)
    loss.backward()
    mean_loss = loss.detach().clone()
    torch.distributed.all_reduce(mean_loss)
    return {"loss": mean_loss / world_size, "grad_weight": projector.weight.grad, "grad_bias": projector.bias.grad,
            "input_grad": x_a_local.grad}


def test_nt_xent_two_ranks_equal_one_rank_with_double_batch():
    results = run_distributed(_ddp_nt_xent, WORLD)
    x_a, x_b, state = _global_inputs()
    projector = torch.nn.Linear(IN_DIM, OUT_DIM)
    projector.load_state_dict(state)
    x_a = x_a.clone().requires_grad_(True)
    loss = nt_xent(projector(x_a), projector(x_b), temperature=0.3)
    loss.backward()
    for rank, result in enumerate(results):
        assert torch.allclose(result["loss"], loss.detach(), atol=1e-5), (result["loss"], loss)
        # DDP averages parameter gradients over ranks: must equal the single-process gradient
        assert torch.allclose(result["grad_weight"], projector.weight.grad, atol=1e-5)
        assert torch.allclose(result["grad_bias"], projector.bias.grad, atol=1e-5)
        # the gradient reaching this rank's inputs, averaged like DDP does, equals the global one
        local = slice(rank * BATCH, (rank + 1) * BATCH)
        assert torch.allclose(result["input_grad"] / WORLD, x_a.grad[local], atol=1e-5)


def _local_only_nt_xent(rank, world_size):
    x_a, x_b, state = _global_inputs()
    local = slice(rank * BATCH, (rank + 1) * BATCH)
    return nt_xent(x_a[local], x_b[local], temperature=0.3, gather=False)


def test_without_gathering_negatives_the_loss_differs():
    """Guards the test above: local-only negatives (the classic bug) give a different loss."""
    results = run_distributed(_local_only_nt_xent, WORLD)
    x_a, x_b, _ = _global_inputs()
    full = nt_xent(x_a, x_b, temperature=0.3)
    assert not torch.allclose(sum(results) / WORLD, full, atol=1e-3)


@pytest.mark.slow
def test_torchrun_two_process_training_end_to_end(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "selfsup.cli", "train", "demo", "name=ddp", f"runs_dir={tmp_path}", "train.budget=null",
           "train.max_steps=6", "train.batch_size=32", "train.log_every=1", "train.progress=false",
           "data.num_workers=0", "eval.protocols=[knn]", "eval.baselines=false", "backbone.options={widths: [8, 16, 16, 32]}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))  # only rank 0 logs, once per step
    env_info = json.loads((run / "env.json").read_text())
    assert env_info["world_size"] == 2
    assert (run / "backbone.safetensors").exists()
    assert "knn_top1@20" in json.loads((run / "results.json").read_text())["results"]["pretrained"]
