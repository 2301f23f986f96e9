"""Distributed semantics of SIGReg (LeJEPA), of iBOT's patch centring + masked patch loss and of T-JEPA's
batch-standardised latent targets (docs/ARCHITECTURE.md,
"Distributed semantics"): 2 gloo processes x batch B give the loss (averaged over ranks, as DDP averages gradients), the parameter
gradients and the centre of 1 process x batch 2B, to 1e-5.

SIGReg's empirical characteristic function is a statistic of the whole batch; the classic bug reduces its
per-rank parts with a collective that has no autograd, which keeps the VALUE right and makes every gradient
1/world too small. The last test computes exactly that variant and shows the equivalence test would catch it.
Every scenario runs in one pair of spawned processes (spawning costs seconds); the tests read its results.
"""
import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from distributed_utils import assert_equal_to_one_rank, run_distributed
from selfsup.losses.distillation import masked_patch_distillation, update_center
from selfsup.losses.predictive import latent_prediction_loss, standardise_over_batch
from selfsup.losses.sigreg import sigreg, sigreg_directions

pytestmark = pytest.mark.distributed

BATCH, IN_DIM, OUT_DIM, WORLD, PATCHES, SLICES, STEP = 4, 6, 5, 2, 7, 16, 11


def _global_data():
    gen = torch.Generator().manual_seed(0)
    n = WORLD * BATCH
    data = {name: torch.randn(n, IN_DIM, generator=gen) for name in ("x_a", "x_b")}
    data["patches"] = [torch.randn(n, PATCHES, IN_DIM, generator=gen) for _ in range(2)]  # two global views
    data["masks"] = [torch.rand(n, PATCHES, generator=gen) < 0.4 for _ in range(2)]
    data["masks"][1][3] = False  # an image without a masked patch
    for name, seed in (("state", 1), ("teacher_state", 2)):
        layer = torch.nn.Linear(IN_DIM, OUT_DIM)
        torch.nn.init.normal_(layer.weight, generator=torch.Generator().manual_seed(seed))
        torch.nn.init.normal_(layer.bias, generator=torch.Generator().manual_seed(seed + 10))
        data[name] = layer.state_dict()
    data["center"] = torch.randn(1, OUT_DIM, generator=gen)
    return data


def _local(value, rank, world_size):
    size = WORLD * BATCH // world_size
    return value[rank * size:(rank + 1) * size]


def _sigreg(model, data, rank, world_size, gather=True):
    z = torch.stack([model(_local(data[name], rank, world_size)) for name in ("x_a", "x_b")])  # (views, B, K)
    directions = sigreg_directions(OUT_DIM, SLICES, step=STEP)  # a function of the step: the same on every rank
    return sigreg(z, directions, gather=gather), {"directions": directions}


def _ibot_patches(model, data, rank, world_size):
    teacher = torch.nn.Linear(IN_DIM, OUT_DIM)
    teacher.load_state_dict(data["teacher_state"])
    masks = [_local(m, rank, world_size) for m in data["masks"]]
    patches = [_local(p, rank, world_size) for p in data["patches"]]
    with torch.no_grad():
        teacher_out = [teacher(p) for p in patches]  # the teacher sees every patch
    center = update_center(data["center"], teacher_out, momentum=0.8)
    # the student sees the masked patches zeroed (a stand-in for the mask token)
    student_out = [model(p.masked_fill(m[..., None], 0.0)) for p, m in zip(patches, masks)]
    loss = masked_patch_distillation(student_out, teacher_out, masks, center, student_temp=0.3, teacher_temp=0.1)
    return loss, {"center": center}


def _standardised_latent_prediction(model, data, rank, world_size):
    """T-JEPA's targets standardised over the global batch: each rank's loss uses the same mean and variance."""
    teacher = torch.nn.Linear(IN_DIM, OUT_DIM)
    teacher.load_state_dict(data["teacher_state"])
    patches = _local(data["patches"][0], rank, world_size)
    with torch.no_grad():
        targets = standardise_over_batch(teacher(patches))
    return latent_prediction_loss(model(patches.flip(1)), targets, kind="l2"), {}


def _sigreg_without_autograd_reduce(model, data, rank, world_size):
    """The shipped bug: the batch sums reduced by a collective without autograd (each rank differentiates only
    through its own share). Same value, gradients 1/world too small."""
    z = torch.stack([model(_local(data[name], rank, world_size)) for name in ("x_a", "x_b")])
    x = (z @ sigreg_directions(OUT_DIM, SLICES, step=STEP))[..., None] * torch.linspace(0, 3, 17)
    sums = torch.stack([x.cos().sum(dim=-3), x.sin().sum(dim=-3)])
    reduced = sums.detach().clone()
    dist.all_reduce(reduced)
    sums = sums + (reduced - sums.detach())  # global value, local gradient only
    t = torch.linspace(0, 3, 17)
    phi = torch.exp(-t ** 2 / 2)
    weights = torch.full_like(t, 2 * 3 / 16)
    weights[[0, -1]] = 3 / 16
    n = WORLD * BATCH
    error = (sums[0] / n - phi) ** 2 + (sums[1] / n) ** 2
    return ((error @ (weights * phi)) * n).mean(), {}


SCENARIOS = {"sigreg": _sigreg, "ibot_patch_centering_and_loss": _ibot_patches,
             "standardised_latent_prediction": _standardised_latent_prediction}


def _run(fn, data, rank, world_size):
    layer = torch.nn.Linear(IN_DIM, OUT_DIM)
    layer.load_state_dict(data["state"])
    model = DistributedDataParallel(layer) if world_size > 1 else layer
    loss, extras = fn(model, data, rank, world_size)
    loss.backward()
    mean_loss = loss.detach().clone()
    if world_size > 1:
        dist.all_reduce(mean_loss)
        mean_loss /= world_size
    return {"loss": mean_loss, "grad_weight": layer.weight.grad, "grad_bias": layer.bias.grad, **extras}


def _everything(rank, world_size):
    data = _global_data()
    results = {name: _run(fn, data, rank, world_size) for name, fn in SCENARIOS.items()}
    results["sigreg_buggy"] = _run(_sigreg_without_autograd_reduce, data, rank, world_size)
    layer = torch.nn.Linear(IN_DIM, OUT_DIM)
    layer.load_state_dict(data["state"])
    with torch.no_grad():
        local = _sigreg(layer, data, rank, world_size, gather=False)[0]
    dist.all_reduce(local)
    results["sigreg_local_only"] = local / world_size
    return results


@pytest.fixture(scope="module")
def two_ranks():
    return run_distributed(_everything, WORLD)


@pytest.fixture(scope="module")
def data():
    return _global_data()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_ranks_equal_one_rank_with_double_batch(two_ranks, data, name):
    # Also the SIGReg directions and iBOT's patch centre.
    assert_equal_to_one_rank([result[name] for result in two_ranks], _run(SCENARIOS[name], data, rank=0, world_size=1))


def test_ibot_patch_centre_is_the_global_mean_over_every_teacher_patch(two_ranks, data):
    teacher = torch.nn.Linear(IN_DIM, OUT_DIM)
    teacher.load_state_dict(data["teacher_state"])
    with torch.no_grad():
        mean = torch.cat([teacher(p).reshape(-1, OUT_DIM) for p in data["patches"]]).mean(dim=0, keepdim=True)
    for result in two_ranks:
        assert torch.allclose(result["ibot_patch_centering_and_loss"]["center"], 0.8 * data["center"] + 0.2 * mean,
                              atol=1e-6)


def test_sigreg_on_rank_local_samples_differs(two_ranks, data):
    """Guards the test above: SIGReg of each rank's own samples (no gathering) is another value."""
    reference = _run(_sigreg, data, rank=0, world_size=1)["loss"]
    assert not torch.allclose(two_ranks[0]["sigreg_local_only"], reference, atol=1e-3)


def test_a_reduce_without_autograd_keeps_the_value_but_shrinks_the_gradients(two_ranks, data):
    """The bug the equivalence test exists for: right loss, gradients 1 / world of the single-process ones."""
    reference = _run(_sigreg, data, rank=0, world_size=1)
    buggy = two_ranks[0]["sigreg_buggy"]
    assert torch.allclose(buggy["loss"], reference["loss"], atol=1e-5)
    assert torch.allclose(buggy["grad_weight"] * WORLD, reference["grad_weight"], atol=1e-5)
    assert not torch.allclose(buggy["grad_weight"], reference["grad_weight"], atol=1e-3)
