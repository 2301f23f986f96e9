"""Distributed semantics of the coding-rate losses (losses/coding_rate.py; docs/ARCHITECTURE.md, "Distributed
semantics"): 2 gloo processes x batch B give the loss (averaged over ranks, as DDP averages gradients) and the
parameter gradients of 1 process x batch 2B; without gathering, the coding rate is another value.

One pair of spawned processes runs every scenario; the tests read its results."""
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from distributed_utils import assert_equal_to_one_rank, run_distributed
from selfsup.losses import emp_ssl_loss, patch_invariance, total_coding_rate

pytestmark = pytest.mark.distributed

BATCH, PATCHES, IN_DIM, OUT_DIM, WORLD = 4, 3, 6, 5, 2


def _global_data():
    gen = torch.Generator().manual_seed(0)
    projector = torch.nn.Linear(IN_DIM, OUT_DIM)
    torch.nn.init.normal_(projector.weight, generator=gen)
    torch.nn.init.normal_(projector.bias, generator=gen)
    return {"patches": torch.randn(PATCHES, WORLD * BATCH, IN_DIM, generator=gen), "state": projector.state_dict()}


def _local(data, rank, world_size):
    size = WORLD * BATCH // world_size
    return data["patches"][:, rank * size:(rank + 1) * size]


def _embed(model, patches):
    return F.normalize(model(patches), dim=-1)  # (K, B, D), as the method's projections


# eps 0.5 with 5-dim projections of 8 samples: the rate is far from saturated, so gathering visibly matters
SCENARIOS = {
    "total_coding_rate": lambda m, x: -total_coding_rate(_embed(m, x), eps=0.5).mean(),
    "patch_invariance": lambda m, x: -patch_invariance(_embed(m, x)),
    "emp_ssl_loss": lambda m, x: emp_ssl_loss(_embed(m, x), eps=0.5, invariance_weight=3.0)[0],
}


def _run_scenario(fn, data, rank, world_size):
    projector = torch.nn.Linear(IN_DIM, OUT_DIM)
    projector.load_state_dict(data["state"])
    model = DistributedDataParallel(projector) if world_size > 1 else projector
    loss = fn(model, _local(data, rank, world_size))
    loss.backward()
    mean_loss = loss.detach().clone()
    if world_size > 1:
        dist.all_reduce(mean_loss)
        mean_loss /= world_size
    return {"loss": mean_loss, "grad_weight": projector.weight.grad, "grad_bias": projector.bias.grad}


def _everything(rank, world_size):
    data = _global_data()
    results = {name: _run_scenario(fn, data, rank, world_size) for name, fn in SCENARIOS.items()}
    local_rate = total_coding_rate(F.normalize(_local(data, rank, world_size)[..., :OUT_DIM], dim=-1), eps=0.5,
                                   gather=False).mean()
    dist.all_reduce(local_rate)
    results["local_only_rate"] = local_rate / world_size
    return results


@pytest.fixture(scope="module")
def two_ranks():
    return run_distributed(_everything, WORLD)


@pytest.fixture(scope="module")
def data():
    return _global_data()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_ranks_equal_one_rank_with_double_batch(two_ranks, data, name):
    assert_equal_to_one_rank([result[name] for result in two_ranks],
                             _run_scenario(SCENARIOS[name], data, rank=0, world_size=1))


def test_without_gathering_the_rate_differs(two_ranks, data):
    """Guards the test above: the rate of each rank's B samples is not the rate of the global batch."""
    full = total_coding_rate(F.normalize(data["patches"][..., :OUT_DIM], dim=-1), eps=0.5).mean()
    assert not torch.allclose(two_ranks[0]["local_only_rate"], full, atol=1e-3)
