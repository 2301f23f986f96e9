"""``train.parallel=fsdp`` (selfsup.engine.sharding): FSDP2 on 2 gloo processes trains exactly as DDP does (the
same loss at every step, the same exported backbone), each rank holds half of the weights, a run killed with
SIGKILL resumes sharded and continues exactly, and a copy of its checkpoint resumes in one process too."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from distributed_utils import run_distributed
from selfsup.backbones import build_backbone
from selfsup.config import ConfigError, build_config
from selfsup.config.sections import TrainConfig
from selfsup.engine.placement import PlacedModel
from selfsup.engine.sharding import shard_units
from selfsup.dist import DistInfo
from selfsup.methods import build_method
from test_engine import logged_losses, wait_for_step

pytestmark = pytest.mark.distributed

STEPS = 6
TINY_IJEPA = ["backbone.options={embed_dim: 32, depth: 2, num_heads: 2}", "method_options.predictor_dim=16",
              "method_options.predictor_depth=1", "method_options.predictor_heads=2"]


def _ijepa():
    torch.manual_seed(0)
    backbone = build_backbone("vit_micro_cpu", 3, img_size=32, embed_dim=32, depth=2, num_heads=2)
    return build_method("ijepa", backbone, {"predictor_dim": 16, "predictor_depth": 1, "predictor_heads": 2})


def test_the_units_are_the_blocks_of_every_tower():
    method = _ijepa()
    units = shard_units(method)
    blocks = [*method.backbone.model.blocks, *method.target_backbone.model.blocks]
    assert all(any(unit is block for unit in units) for block in blocks)  # student and EMA teacher alike
    assert all(any(True for _ in unit.parameters()) for unit in units)
    inside = {id(m) for unit in units for m in unit.modules() if m is not unit}
    assert not any(id(unit) in inside for unit in units)  # no unit nested in another


def test_sharding_with_compile_fails_at_start_naming_the_keys():
    with pytest.raises(ConfigError, match="train.compile"):
        build_config("ijepa", ["train.parallel=fsdp", "train.compile=true"])
    assert TrainConfig().parallel == "ddp"


def _local_share(rank, world_size):
    method = _ijepa()
    total = sum(p.numel() for p in method.parameters())
    placed = PlacedModel(method, TrainConfig(parallel="fsdp"), DistInfo(rank=rank, world_size=world_size), False)
    held = sum(p.to_local().numel() for p in placed.method.parameters())
    return {"total": total, "held": held, "sharded": placed.sharded, "units": placed.shard_units}


def test_each_rank_holds_its_share_of_the_weights():
    results = run_distributed(_local_share, 2)
    assert all(r["sharded"] for r in results)
    assert sum(r["held"] for r in results) == results[0]["total"]  # disjoint shards that cover every weight
    assert all(r["held"] <= 0.55 * r["total"] for r in results)
    assert results[0]["units"] == 2 + 2 + 1  # student, teacher and predictor blocks


def _torchrun(tmp_path, name, *extra, resume=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run_args = (["train", "--resume", str(resume)] if resume else
                ["train", "ijepa", f"name={name}", f"runs_dir={tmp_path}", "train.budget=null",
                 f"train.max_steps={STEPS}", "train.batch_size=16", "train.log_every=1", "train.checkpoint_every=1",
                 "train.progress=false", "train.precision=fp32", "data.num_workers=0", "eval.protocols=[knn]",
                 "eval.baselines=false", "eval.report=false", *TINY_IJEPA, *extra])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "selfsup.cli",
           *run_args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # a process group: SIGKILL reaches the workers too


def _finish(proc):
    _, err = proc.communicate(timeout=300)
    # torchrun's own warnings would hide the workers' traceback: the lines that name a rank or an error first,
    # then the end of the log as it is (a worker's traceback is not always prefixed by its rank)
    named = "\n".join(line for line in err.splitlines() if "[rank" in line or "Error" in line)[-3000:]
    assert proc.returncode == 0, f"{named}\n--- end of the log ---\n{err[-3000:]}"


def _backbones_equal(a, b, atol):
    a, b = load_file(a / "backbone.safetensors"), load_file(b / "backbone.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=atol) for k in a)


@pytest.mark.slow
def test_fsdp_trains_as_ddp_and_a_killed_run_resumes_exactly_sharded_and_in_one_process(tmp_path):
    _finish(_torchrun(tmp_path, "ddp", "train.parallel=ddp"))
    _finish(_torchrun(tmp_path, "fsdp", "train.parallel=fsdp"))
    ddp, fsdp = logged_losses(tmp_path / "ddp"), logged_losses(tmp_path / "fsdp")
    assert sorted(fsdp) == list(range(1, STEPS + 1))
    assert all(abs(ddp[s] - fsdp[s]) < 1e-5 for s in ddp), (ddp, fsdp)
    _backbones_equal(tmp_path / "ddp", tmp_path / "fsdp", atol=1e-5)
    assert "knn_top1@20" in json.loads((tmp_path / "fsdp" / "results.json").read_text())["results"]["pretrained"]

    interrupted = tmp_path / "interrupted"
    proc = _torchrun(tmp_path, "interrupted", "train.parallel=fsdp")
    wait_for_step(interrupted, 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # The checkpoint holds the gathered state, optimizer entries keyed by parameter name: it is not tied to the
    # number of ranks that wrote it. A copy of the killed run resumes in one process on the same global batch.
    saved = torch.load(interrupted / "checkpoints" / "last.pt", weights_only=True)
    assert saved["optimizer_keys"] == "names" and all(isinstance(k, str) for k in saved["optimizer"]["state"])
    one_process = tmp_path / "one-process"
    shutil.copytree(interrupted, one_process)

    _finish(_torchrun(tmp_path, None, resume=interrupted))
    resumed = logged_losses(interrupted)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert all(abs(resumed[s] - fsdp[s]) < 1e-6 for s in fsdp), (resumed, fsdp)
    _backbones_equal(tmp_path / "fsdp", interrupted, atol=1e-6)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "selfsup.cli", "train", "--resume", str(one_process)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = logged_losses(one_process)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert all(abs(resumed[s] - fsdp[s]) < 1e-5 for s in fsdp), (resumed, fsdp)
    _backbones_equal(tmp_path / "fsdp", one_process, atol=1e-5)
