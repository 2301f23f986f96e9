"""Distributed semantics of the image-text losses (losses/image_text.py; docs/ARCHITECTURE.md, "Distributed
semantics"): 2 gloo processes x batch B give the loss (averaged over ranks, as DDP averages gradients) and the
gradients of 1 process x batch 2B: of both towers' projections, of logit_scale and logit_bias, and of the
embeddings. Without gathering, each loss is another value. SigLIP's ring is also run on 3 processes, where
the rank a chunk comes from and the rank its gradient goes back to differ (with 2 they are the same rank).

One spawn per world size runs every scenario; the tests read its results."""
import math

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from distributed_utils import assert_equal_to_one_rank, run_distributed
from selfsup.dist import all_gather_no_grad, send_to_next_rank_with_grad
from selfsup.losses import clip_loss, convirt_loss, siglip_loss

pytestmark = pytest.mark.distributed

BATCH, IMAGE_DIM, TEXT_DIM, EMBED_DIM, WORLD, RING_WORLD = 4, 6, 7, 5, 2, 3


class _Towers(nn.Module):
    """Two linear towers and the learnable log scale / bias, as ImageTextTowers holds them."""

    def __init__(self, with_scale: bool, with_bias: bool):
        super().__init__()
        self.image, self.text = nn.Linear(IMAGE_DIM, EMBED_DIM), nn.Linear(TEXT_DIM, EMBED_DIM)
        # CLIP's initial temperature 0.07; a SigLIP bias of -2 rather than the paper's -10 keeps the
        # negatives' terms (the ones that cross ranks) large enough to be compared
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07))) if with_scale else None
        self.logit_bias = nn.Parameter(torch.tensor(-2.0)) if with_bias else None

    def forward(self, images, texts):
        return self.image(images), self.text(texts), self.logit_scale, self.logit_bias


def _global_data(world):
    gen = torch.Generator().manual_seed(world)
    towers = _Towers(with_scale=False, with_bias=False)
    for parameter in towers.parameters():
        nn.init.normal_(parameter, generator=gen)
    return {"images": torch.randn(world * BATCH, IMAGE_DIM, generator=gen),
            "texts": torch.randn(world * BATCH, TEXT_DIM, generator=gen), "state": towers.state_dict()}


def _local(data, rank, world_size):
    size = len(data["images"]) // world_size
    local = slice(rank * size, (rank + 1) * size)
    return data["images"][local], data["texts"][local]


# name: (loss of (image_emb, text_emb, logit_scale, logit_bias), uses logit_scale, uses logit_bias); a parameter
# the loss does not use stays out of the model, or DDP would wait for its gradient
SCENARIOS = {
    "clip_loss": (lambda i, t, s, b: clip_loss(i, t, s), True, False),
    "clip_loss_local_loss": (lambda i, t, s, b: clip_loss(i, t, s, local_loss=True), True, False),
    "siglip_loss": (lambda i, t, s, b: siglip_loss(i, t, s, b), True, True),
    "convirt_loss": (lambda i, t, s, b: convirt_loss(i, t, temperature=0.1, weight=0.75), False, False),
}
# the raw inputs cut to one width serve as embeddings: the same losses on rank-local pairs only
LOCAL_ONLY = {
    "clip_loss": lambda i, t, gather: clip_loss(i, t, math.log(1 / 0.07), gather=gather),
    "siglip_loss": lambda i, t, gather: siglip_loss(i, t, math.log(1 / 0.07), -2.0, gather=gather),
    "convirt_loss": lambda i, t, gather: convirt_loss(i, t, gather=gather),
}


def _raw_pairs(images, texts):
    return images[:, :EMBED_DIM], texts[:, :EMBED_DIM]


def _gathered(tensor, world_size):
    return all_gather_no_grad(tensor) if world_size > 1 else tensor


def _mean_over_ranks(value, world_size):
    value = value.detach().clone()
    if world_size > 1:
        dist.all_reduce(value)
        value /= world_size
    return value


def _run_scenario(name, data, rank, world_size):
    loss_fn, with_scale, with_bias = SCENARIOS[name]
    towers = _Towers(with_scale, with_bias)
    towers.load_state_dict(data["state"], strict=False)
    model = DistributedDataParallel(towers) if world_size > 1 else towers
    image_emb, text_emb, logit_scale, logit_bias = model(*_local(data, rank, world_size))
    image_emb.retain_grad()
    text_emb.retain_grad()
    loss = loss_fn(image_emb, text_emb, logit_scale, logit_bias)
    loss.backward()
    result = {"loss": _mean_over_ranks(loss, world_size), "grad_weight": towers.image.weight.grad,
              "grad_bias": towers.image.bias.grad, "grad_text_weight": towers.text.weight.grad,
              "grad_text_bias": towers.text.bias.grad,
              # a rank's embeddings get N x their global gradient (the gather's backward sums the N ranks' losses,
              # whose mean is the global loss); DDP divides by N for the parameters: do the same here
              "grad_image_emb": _gathered(image_emb.grad, world_size) / world_size,
              "grad_text_emb": _gathered(text_emb.grad, world_size) / world_size}
    if with_scale:
        result["grad_logit_scale"] = towers.logit_scale.grad
    if with_bias:
        result["grad_logit_bias"] = towers.logit_bias.grad
    return result


def _everything(rank, world_size):
    data = _global_data(world_size)
    results = {name: _run_scenario(name, data, rank, world_size) for name in SCENARIOS}
    local_pairs = _raw_pairs(*_local(data, rank, world_size))
    results["local_only"] = {name: _mean_over_ranks(fn(*local_pairs, gather=False), world_size)
                             for name, fn in LOCAL_ONLY.items()}
    return results


def _ring(rank, world_size):
    sent = torch.full((2, 3), float(rank), requires_grad=True)
    received = send_to_next_rank_with_grad(sent)
    (received * (rank + 1)).sum().backward()  # each rank weighs what it received by its own rank + 1
    return {"siglip_loss": _run_scenario("siglip_loss", _global_data(world_size), rank, world_size),
            "received": received.detach(), "sent_grad": sent.grad}


@pytest.fixture(scope="module")
def two_ranks():
    return run_distributed(_everything, WORLD)


@pytest.fixture(scope="module")
def three_ranks():
    return run_distributed(_ring, RING_WORLD)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_ranks_equal_one_rank_with_double_batch(two_ranks, name):
    reference = _run_scenario(name, _global_data(WORLD), rank=0, world_size=1)
    assert_equal_to_one_rank([result[name] for result in two_ranks], reference, atol=1e-5, other_atol=1e-5)


def test_clip_loss_local_and_global_forms_agree(two_ranks):
    for result in two_ranks:
        for key, value in result["clip_loss"].items():
            assert torch.allclose(value, result["clip_loss_local_loss"][key], atol=1e-5), key


@pytest.mark.parametrize("name", list(LOCAL_ONLY))
def test_without_gathering_the_loss_differs(two_ranks, name):
    """Guards the test above: negatives from this rank only (the classic bug) give another loss."""
    data = _global_data(WORLD)
    global_loss = LOCAL_ONLY[name](*_raw_pairs(data["images"], data["texts"]), gather=True)
    assert not torch.allclose(two_ranks[0]["local_only"][name], global_loss, atol=1e-3)


def test_siglip_ring_on_three_ranks_equals_one_rank_with_triple_batch(three_ranks):
    reference = _run_scenario("siglip_loss", _global_data(RING_WORLD), rank=0, world_size=1)
    assert_equal_to_one_rank([result["siglip_loss"] for result in three_ranks], reference, atol=1e-5,
                             other_atol=1e-5)


def test_send_to_next_rank_receives_from_the_previous_and_sends_gradients_back(three_ranks):
    for rank, result in enumerate(three_ranks):
        assert torch.equal(result["received"], torch.full((2, 3), float((rank - 1) % RING_WORLD)))
        # rank r's tensor went to rank r + 1, which weighed it by (r + 1) + 1
        assert torch.equal(result["sent_grad"], torch.full((2, 3), float((rank + 1) % RING_WORLD + 1)))
