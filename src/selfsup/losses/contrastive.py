"""Contrastive losses.

Distributed semantics: a loss here returns the mean over this rank's anchors, with negatives taken from the
global batch through an autograd-aware all_gather. Averaging the per-rank losses (which DDP does to the
gradients) gives exactly the single-process loss and gradient on the global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.engine.distributed import all_gather_with_grad, rank


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.5, gather: bool = True) -> torch.Tensor:
    """Normalized temperature-scaled cross entropy (NT-Xent), SimCLR (Chen et al., ICML 2020), eq. 1.

    ``z_a[i]`` and ``z_b[i]`` are two views of sample i. Every one of the 2B local embeddings is an anchor; its
    positive is the other view of the same sample; its negatives are the other 2(NB - 1) embeddings of the
    global batch of N ranks. Computed in float32 whatever the autocast dtype.
    """
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(f"nt_xent expects two (B, D) tensors of one shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    z_a = F.normalize(z_a.float(), dim=1)
    z_b = F.normalize(z_b.float(), dim=1)
    batch = z_a.shape[0]
    if gather:
        all_a, all_b = all_gather_with_grad(z_a), all_gather_with_grad(z_b)
        offset = rank() * batch if all_a.shape[0] > batch else 0
    else:
        all_a, all_b, offset = z_a, z_b, 0
    global_batch = all_a.shape[0]
    anchors = torch.cat([z_a, z_b])  # (2B, D)
    candidates = torch.cat([all_a, all_b])  # (2NB, D)
    logits = anchors @ candidates.T / temperature
    local = torch.arange(batch, device=z_a.device) + offset
    self_index = torch.cat([local, local + global_batch])
    positive_index = torch.cat([local + global_batch, local])
    rows = torch.arange(2 * batch, device=z_a.device)
    logits[rows, self_index] = float("-inf")
    return F.cross_entropy(logits, positive_index)
