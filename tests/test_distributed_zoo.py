"""Distributed semantics of the method-zoo losses and the feature queue (docs/ARCHITECTURE.md, "Distributed semantics"): 2 gloo processes
x batch B must give the loss (averaged over ranks, as DDP averages gradients) and the parameter gradients of
1 process x batch 2B.

Every scenario runs in one pair of spawned processes (spawning costs seconds); the tests read its results.
"""
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from distributed_utils import assert_equal_to_one_rank, run_distributed
from selfsup.methods.parts.queue import FeatureQueue
from selfsup.losses import (barlow_twins, dino_loss, info_nce, mixed_barlow_regularizer, sinkhorn_knopp, supcon,
                            swav_loss, update_center, vicreg)

pytestmark = pytest.mark.distributed

BATCH, IN_DIM, OUT_DIM, WORLD, CLASSES, QUEUE = 4, 6, 5, 2, 3, 6
MIX_LAMBDA = 0.3


def _global_data():
    gen = torch.Generator().manual_seed(0)
    n = WORLD * BATCH
    data = {name: torch.randn(n, IN_DIM, generator=gen) for name in ("x_a", "x_b", "x_c")}
    data["labels"] = torch.randint(CLASSES, (n,), generator=gen)
    # one permutation per rank (mixing happens inside a rank); globally it is block-diagonal
    data["perm"] = torch.cat([torch.randperm(BATCH, generator=gen) for _ in range(WORLD)])
    data["queue_scores"] = F.normalize(torch.randn(QUEUE, OUT_DIM, generator=gen), dim=1)
    data["keys"] = [torch.randn(n, OUT_DIM, generator=gen) for _ in range(2)]
    projector = torch.nn.Linear(IN_DIM, OUT_DIM)
    torch.nn.init.normal_(projector.weight, generator=gen)
    torch.nn.init.normal_(projector.bias, generator=gen)
    data["state"] = projector.state_dict()
    teacher = torch.nn.Linear(IN_DIM, OUT_DIM)
    torch.nn.init.normal_(teacher.weight, generator=gen)
    torch.nn.init.normal_(teacher.bias, generator=gen)
    data["teacher_state"] = teacher.state_dict()
    data["center"] = torch.randn(1, OUT_DIM, generator=gen)
    return data


def _batch(data, rank, world_size):
    """The slice of the global batch that ``rank`` sees; with world_size 1, the whole global batch."""
    size = WORLD * BATCH // world_size
    local = slice(rank * size, (rank + 1) * size)
    batch = {name: data[name][local] for name in ("x_a", "x_b", "x_c", "labels")}
    perm = data["perm"][local]
    # a rank's permutation indexes its own slice; the single process sees the offset (block-diagonal) one
    batch["perm"] = perm if world_size > 1 else torch.cat([perm[r * BATCH:(r + 1) * BATCH] + r * BATCH
                                                           for r in range(WORLD)])
    return batch


def _dino(model, batch, data):
    teacher = torch.nn.Linear(IN_DIM, OUT_DIM)
    teacher.load_state_dict(data["teacher_state"])
    with torch.no_grad():
        teacher_logits = [teacher(batch["x_a"]), teacher(batch["x_b"])]
    center = update_center(data["center"], teacher_logits, momentum=0.8)
    students = [model(batch["x_a"]), model(batch["x_b"]), model(batch["x_c"])]
    return dino_loss(students, teacher_logits, center, student_temp=0.3, teacher_temp=0.1), {"center": center}


def _swav(model, batch, data, with_queue):
    scores = [F.normalize(model(batch[name]), dim=1) for name in ("x_a", "x_b", "x_c")]
    queue = [data["queue_scores"], data["queue_scores"].flip(0)] if with_queue else None
    # epsilon 0.5 keeps the codes soft: the global normalisation then visibly matters
    return swav_loss(scores, assign_views=(0, 1), epsilon=0.5, temperature=0.2, queue_scores=queue)


SCENARIOS = {
    "info_nce": lambda m, b, d: info_nce(m(b["x_a"]), m(b["x_b"]), temperature=0.3),
    "supcon": lambda m, b, d: supcon(torch.stack([m(b["x_a"]), m(b["x_b"])], dim=1), b["labels"], temperature=0.3),
    "barlow_twins": lambda m, b, d: barlow_twins(m(b["x_a"]), m(b["x_b"]), lambd=0.1),
    "mixed_barlow_regularizer": lambda m, b, d: mixed_barlow_regularizer(
        m(b["x_a"]), m(b["x_b"]), m(MIX_LAMBDA * b["x_a"] + (1 - MIX_LAMBDA) * b["x_b"][b["perm"]]), b["perm"],
        MIX_LAMBDA, lambd=0.1),
    "vicreg": lambda m, b, d: vicreg(m(b["x_a"]), m(b["x_b"]), gamma=3.0)[0],
    "swav_loss": lambda m, b, d: _swav(m, b, d, with_queue=False),
    "swav_loss_with_queue": lambda m, b, d: _swav(m, b, d, with_queue=True),
    "dino_loss_with_update_center": _dino,
}

# the same losses computed from rank-local samples only (the classic bug); each must differ from the global one
LOCAL_ONLY = {
    "info_nce": lambda b, d: info_nce(b["x_a"], b["x_b"], temperature=0.3, gather=False),
    "supcon": lambda b, d: supcon(torch.stack([b["x_a"], b["x_b"]], dim=1), b["labels"], temperature=0.3,
                                  gather=False),
    "barlow_twins": lambda b, d: barlow_twins(b["x_a"], b["x_b"], lambd=0.1, gather=False),
    "vicreg": lambda b, d: vicreg(b["x_a"], b["x_b"], gamma=3.0, gather=False)[0],
    "sinkhorn_knopp": lambda b, d: sinkhorn_knopp(b["x_a"], epsilon=0.5, gather=False),
    # a queue replicated on every rank but counted once per rank in the equipartition
    "swav_loss_with_queue": lambda b, d: swav_loss([b["x_a"][:, :OUT_DIM], b["x_b"][:, :OUT_DIM]], epsilon=0.5,
                                                   queue_scores=[d["queue_scores"], d["queue_scores"]],
                                                   queue_shared=False),
}
GLOBAL = {
    "info_nce": lambda b, d: info_nce(b["x_a"], b["x_b"], temperature=0.3),
    "supcon": lambda b, d: supcon(torch.stack([b["x_a"], b["x_b"]], dim=1), b["labels"], temperature=0.3),
    "barlow_twins": lambda b, d: barlow_twins(b["x_a"], b["x_b"], lambd=0.1),
    "vicreg": lambda b, d: vicreg(b["x_a"], b["x_b"], gamma=3.0)[0],
    "sinkhorn_knopp": lambda b, d: sinkhorn_knopp(b["x_a"], epsilon=0.5),
    "swav_loss_with_queue": lambda b, d: swav_loss([b["x_a"][:, :OUT_DIM], b["x_b"][:, :OUT_DIM]], epsilon=0.5,
                                                   queue_scores=[d["queue_scores"], d["queue_scores"]]),
}


def _run_scenario(fn, data, rank, world_size):
    projector = torch.nn.Linear(IN_DIM, OUT_DIM)
    projector.load_state_dict(data["state"])
    model = DistributedDataParallel(projector) if world_size > 1 else projector
    out = fn(model, _batch(data, rank, world_size), data)
    loss, extras = out if isinstance(out, tuple) else (out, {})
    loss.backward()
    mean_loss = loss.detach().clone()
    if world_size > 1:
        dist.all_reduce(mean_loss)
        mean_loss /= world_size
    return {"loss": mean_loss, "grad_weight": projector.weight.grad, "grad_bias": projector.bias.grad, **extras}


def _queues(data, rank, world_size):
    size = WORLD * BATCH // world_size
    local = slice(rank * size, (rank + 1) * size)
    queues = {"wraps": FeatureQueue(10, OUT_DIM), "overflows": FeatureQueue(QUEUE, OUT_DIM)}
    for keys in data["keys"]:
        for queue in queues.values():
            queue.enqueue(keys[local])
    return {name: {k: v.clone() for k, v in queue.state_dict().items()} for name, queue in queues.items()}


def _everything(rank, world_size):
    data = _global_data()
    batch = _batch(data, rank, world_size)
    results = {name: _run_scenario(fn, data, rank, world_size) for name, fn in SCENARIOS.items()}
    results["sinkhorn_knopp"] = sinkhorn_knopp(batch["x_a"], iterations=20, epsilon=0.5)
    results["queues"] = _queues(data, rank, world_size)
    results["local_only"] = {}
    for name, fn in LOCAL_ONLY.items():
        value = fn(batch, data)
        if name != "sinkhorn_knopp":  # a loss: average over ranks like DDP; codes: keep this rank's rows
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= world_size
        results["local_only"][name] = value
    return results


@pytest.fixture(scope="module")
def two_ranks():
    return run_distributed(_everything, WORLD)


@pytest.fixture(scope="module")
def data():
    return _global_data()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_ranks_equal_one_rank_with_double_batch(two_ranks, data, name):
    # DDP averages parameter gradients over ranks: each must equal the single-process gradient (and the DINO
    # centre the single-process centre).
    assert_equal_to_one_rank([result[name] for result in two_ranks],
                             _run_scenario(SCENARIOS[name], data, rank=0, world_size=1))


def test_dino_center_is_the_global_batch_mean(two_ranks, data):
    teacher = torch.nn.Linear(IN_DIM, OUT_DIM)
    teacher.load_state_dict(data["teacher_state"])
    with torch.no_grad():
        mean = torch.cat([teacher(data["x_a"]), teacher(data["x_b"])]).mean(dim=0, keepdim=True)
    expected = 0.8 * data["center"] + 0.2 * mean
    for result in two_ranks:
        assert torch.allclose(result["dino_loss_with_update_center"]["center"], expected, atol=1e-6)


def test_sinkhorn_codes_of_each_rank_are_the_rows_of_the_global_codes(two_ranks, data):
    reference = sinkhorn_knopp(data["x_a"], iterations=20, epsilon=0.5)  # K = IN_DIM prototypes
    for rank, result in enumerate(two_ranks):
        assert torch.allclose(result["sinkhorn_knopp"], reference[rank * BATCH:(rank + 1) * BATCH], atol=1e-6)
    columns = torch.cat([result["sinkhorn_knopp"] for result in two_ranks]).sum(dim=0)
    # the equipartition is global: each prototype gets ~ 2B / K of the mass over both ranks together
    assert torch.allclose(columns, torch.full_like(columns, WORLD * BATCH / IN_DIM), rtol=0.01)


def test_feature_queue_is_the_same_on_every_rank_and_equals_single_process_enqueue(two_ranks, data):
    reference = _queues(data, rank=0, world_size=1)
    for result in two_ranks:
        for name, state in reference.items():
            for key, value in state.items():
                assert torch.equal(result["queues"][name][key], value), (name, key)
    assert int(reference["wraps"]["filled"]) == 10 and int(reference["wraps"]["pointer"]) == 6
    assert int(reference["overflows"]["pointer"]) == (2 * WORLD * BATCH) % QUEUE


@pytest.mark.parametrize("name", list(LOCAL_ONLY))
def test_without_gathering_the_loss_differs(two_ranks, data, name):
    """Guards the tests above: rank-local statistics or negatives (the classic bug) give another value."""
    full = GLOBAL[name](_batch(data, 0, 1), data)
    if name == "sinkhorn_knopp":
        local = torch.cat([result["local_only"][name] for result in two_ranks])
    else:
        local = two_ranks[0]["local_only"][name]
    assert not torch.allclose(local, full, atol=1e-3)
