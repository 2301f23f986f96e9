"""Distributed semantics of DenseCL's in-batch dense contrast (``dense_info_nce``): two ranks holding uneven
numbers of matched cells equal one process on the whole batch, loss and gradients."""
import pytest
import torch
from torch.nn.parallel import DistributedDataParallel

from distributed_utils import assert_equal_to_one_rank, run_distributed
from selfsup.losses import dense_info_nce

pytestmark = pytest.mark.distributed

BATCH, CELLS, IN_DIM, OUT_DIM, WORLD = 3, 4, 6, 5, 2
# which cells of each image have a match: rank 0 holds 7 of its 12 cells, rank 1 holds 3
VALID = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0],
                      [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)


def _inputs():
    gen = torch.Generator().manual_seed(0)
    cells = torch.randn(WORLD * BATCH, CELLS, IN_DIM, generator=gen)
    matched = torch.randn(WORLD * BATCH, CELLS, IN_DIM, generator=gen)
    projector = torch.nn.Linear(IN_DIM, OUT_DIM)
    torch.nn.init.normal_(projector.weight, generator=gen)
    torch.nn.init.normal_(projector.bias, generator=gen)
    return cells, matched, projector.state_dict()


def _loss(projector, cells, matched, valid):
    q, p = projector(cells), projector(matched)  # (B, N, D)
    owners = torch.arange(len(valid))[:, None].expand_as(valid)[valid]
    return dense_info_nce(q[valid], p[valid], owners, p.mean(dim=1), temperature=0.3)


def _ddp(rank, world_size):
    cells, matched, state = _inputs()
    projector = torch.nn.Linear(IN_DIM, OUT_DIM)
    projector.load_state_dict(state)
    model = DistributedDataParallel(projector)
    local = slice(rank * BATCH, (rank + 1) * BATCH)
    loss = _loss(model, cells[local], matched[local], VALID[local])
    loss.backward()
    mean = loss.detach().clone()
    torch.distributed.all_reduce(mean)
    return {"loss": mean / world_size, "grad_weight": projector.weight.grad, "grad_bias": projector.bias.grad}


def test_dense_info_nce_two_ranks_with_uneven_cells_equal_one_rank():
    results = run_distributed(_ddp, WORLD)
    cells, matched, state = _inputs()
    projector = torch.nn.Linear(IN_DIM, OUT_DIM)
    projector.load_state_dict(state)
    loss = _loss(projector, cells, matched, VALID)
    loss.backward()
    assert_equal_to_one_rank(results, {"loss": loss, "grad_weight": projector.weight.grad,
                                       "grad_bias": projector.bias.grad})
