"""Distributed semantics of the masked + contrastive hybrid (CMAE, docs/ARCHITECTURE.md, "Distributed semantics"): the whole training loss,
MAE reconstruction plus InfoNCE of the online queries against the EMA target's keys of the *global* batch, on
2 gloo processes x batch B under DDP equals 1 process x batch 2B, in value and in every parameter gradient.

The contrastive part is where samples meet: ``info_nce`` all-gathers the keys (constants here, they come from the
EMA target) so that each query is scored against 2B keys, with its positive at its global index. The
reconstruction part is per sample with a fixed masked count, so per-rank means average to the global mean.
The heads run without BatchNorm here: BN statistics are per rank unless SyncBatchNorm (CUDA only) is used, which
the engine switches on for CMAE (``sync_batchnorm``); that is not what this test is about.
"""
import random

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from distributed_utils import run_distributed
from selfsup.backbones import build_backbone
from selfsup.losses import info_nce
from selfsup.methods import build_method
from selfsup.methods.mae import encode_visible
from selfsup.views.masks import RandomMask

pytestmark = pytest.mark.distributed

BATCH, WORLD, SIZE = 4, 2, 16
OPTIONS = {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, "feature_decoder_depth": 1,
           "projector_hidden_dim": 16, "projector_out_dim": 8, "head_batch_norm": False, "temperature": 0.2,
           "contrastive_weight": 0.7}


def _method():
    torch.manual_seed(0)
    backbone = build_backbone("vit_micro_cpu", 3, img_size=SIZE, embed_dim=32, depth=1, num_heads=2)
    method = build_method("cmae", backbone, OPTIONS)
    with torch.no_grad():  # a target that differs from the online encoder, as after some training
        for p in method.target_backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return method


def _global_batch():
    gen = torch.Generator().manual_seed(1)
    n = WORLD * BATCH
    views = [torch.randn(n, 3, SIZE, SIZE, generator=gen) for _ in range(2)]
    drawn = [RandomMask(OPTIONS.get("mask_ratio", 0.65))((4, 4), random.Random(i)) for i in range(n)]
    masks = {key: torch.stack([d[key] for d in drawn]) for key in ("mask", "visible")}
    return views, masks


def _local(rank, world_size):
    views, masks = _global_batch()
    size = WORLD * BATCH // world_size
    part = slice(rank * size, (rank + 1) * size)
    return {"views": [v[part] for v in views], "masks": {k: m[part] for k, m in masks.items()}}


def _mean_over_ranks(value: torch.Tensor, world_size: int) -> torch.Tensor:
    value = value.detach().clone()
    if world_size > 1:
        dist.all_reduce(value)
        value /= world_size
    return value


def _step(rank, world_size):
    method = _method()
    model = DistributedDataParallel(method) if world_size > 1 else method
    batch = _local(rank, world_size)
    out = model(batch)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in method.named_parameters() if p.grad is not None}
    # the same queries and keys scored against this rank's keys only: the bug the gather prevents
    with torch.no_grad():
        visible = batch["masks"]["visible"]
        tokens, prefix, grid = encode_visible(method.backbone, batch["views"][0], visible)
        query, key = method.query(tokens, visible, prefix, grid), method.key(batch["views"][1])
        tau = OPTIONS["temperature"]
        local_only = 2 * tau * info_nce(query, key, temperature=tau, gather=False)
    return {"loss": _mean_over_ranks(out.loss, world_size),
            "contrastive": _mean_over_ranks(torch.tensor(out.metrics["contrastive"]), world_size),
            "local_only": _mean_over_ranks(local_only, world_size), "grads": grads}


@pytest.fixture(scope="module")
def two_ranks():
    return run_distributed(_step, WORLD)


def test_cmae_two_ranks_equal_one_rank_with_double_batch(two_ranks):
    reference = _step(0, 1)
    assert len(reference["grads"]) > 20  # encoder, both decoders, projector, predictor
    for rank, result in enumerate(two_ranks):
        assert torch.allclose(result["loss"], reference["loss"], atol=1e-5), (rank, result["loss"], reference["loss"])
        assert torch.allclose(result["contrastive"], reference["contrastive"], atol=1e-5), rank
        assert result["grads"].keys() == reference["grads"].keys()
        for name, grad in reference["grads"].items():  # DDP averages gradients: the single-process gradient
            assert torch.allclose(result["grads"][name], grad, atol=1e-5), (rank, name)


def test_cmae_contrast_uses_the_keys_of_every_rank(two_ranks):
    reference = _step(0, 1)
    for result in two_ranks:
        # rank-local negatives (4 keys instead of 8) give a visibly different, smaller loss
        assert result["local_only"] < reference["contrastive"] - 1e-3
