"""Clustering losses: SwAV's Sinkhorn-Knopp codes and swapped prediction.

Distributed semantics: the equipartition constraint is global. Sinkhorn-Knopp normalises each prototype's mass
over the global batch (an all_reduce of per-prototype sums, no autograd: the codes are targets) and each
sample's row locally; the loss is then a mean over this rank's samples, which DDP's averaging makes global.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from selfsup.dist import all_reduce_max, all_reduce_sum, world_size


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, iterations: int = 3, epsilon: float = 0.05, gather: bool = True,
                   num_shared: int = 0) -> torch.Tensor:
    """Soft equipartitioned assignments Q of samples to prototypes, SwAV (Caron et al., "Unsupervised Learning of
    Visual Features by Contrasting Cluster Assignments", NeurIPS 2020, section 3.1 and appendix A.1).

    Starts from ``exp(scores / epsilon)`` (B, K) and alternates ``iterations`` times: scale each prototype
    column to the same total mass over the global batch, then scale each sample's row to sum to 1. Returns the
    (B, K) float32 codes for the local rows; each row sums to 1 and, as the iterations converge, each
    prototype receives B_global / K of the mass.

    Distributed (``gather``): the per-prototype sums are all-reduced. ``num_shared``: the first rows are
    replicated identically on every rank (a queue from :class:`selfsup.methods.parts.queue.FeatureQueue`, which
    gathers before enqueueing); they are weighted by 1 / world size in the global sums, so they count once,
    as they would in a single process holding the queue and the global batch.
    """
    if scores.ndim != 2:
        raise ValueError(f"sinkhorn_knopp expects (B, K) scores, got {tuple(scores.shape)}")
    if iterations < 1:
        raise ValueError("sinkhorn_knopp needs at least one iteration")
    logits = scores.detach().float() / epsilon
    # A global constant shift leaves the result unchanged (it cancels in the normalisations) and keeps exp finite.
    shift = logits.max() if logits.numel() else logits.new_zeros(())
    if gather:
        shift = all_reduce_max(shift.clone())
    codes = torch.exp(logits - shift)
    weight = torch.ones(codes.shape[0], 1, device=codes.device)
    if gather and num_shared:
        weight[:num_shared] = 1.0 / world_size()
    tiny = torch.finfo(codes.dtype).tiny
    for _ in range(iterations):
        prototype_mass = (weight * codes).sum(dim=0)
        if gather:
            prototype_mass = all_reduce_sum(prototype_mass)
        codes = codes / prototype_mass.clamp(min=tiny)
        codes = codes / codes.sum(dim=1, keepdim=True).clamp(min=tiny)
    return codes


def swav_loss(scores: list[torch.Tensor], assign_views: Sequence[int] = (0, 1), iterations: int = 3,
              epsilon: float = 0.05, temperature: float = 0.1, queue_scores: list[torch.Tensor] | None = None,
              gather: bool = True, queue_shared: bool = True) -> torch.Tensor:
    """SwAV swapped prediction (Caron et al., NeurIPS 2020, eq. 1-3).

    ``scores[v]`` (B, K) are the prototype scores (cosines) of view v. For every view i in ``assign_views`` the
    codes q_i come from :func:`sinkhorn_knopp` (no gradient); every other view v predicts them with
    ``softmax(scores[v] / temperature)``; the loss ``-sum_k q_i log p_v`` is averaged over samples and over all
    (i, v != i) pairs. ``queue_scores[n]`` (Q, K), when given, are the scores of queued embeddings for
    ``assign_views[n]``: they are prepended before Sinkhorn-Knopp (more samples make the equipartition
    meaningful for small batches) and their codes dropped afterwards.

    Distributed: Sinkhorn-Knopp normalises over the global batch (``gather``); with ``queue_shared`` the queue
    rows are identical on every rank (FeatureQueue) and count once; pass False for rank-local queues, whose
    rows then count as local samples. The value is a mean over this rank's samples (DDP averaging makes it
    global).
    """
    if queue_scores is not None and len(queue_scores) != len(assign_views):
        raise ValueError(f"swav_loss: {len(queue_scores)} queue score tensors for {len(assign_views)} assigned views")
    if len(scores) < 2:
        raise ValueError("swav_loss needs at least two views")
    log_predictions = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]
    total, pairs = None, 0
    for n, i in enumerate(assign_views):
        target_scores, shared = scores[i].detach(), 0
        if queue_scores is not None and queue_scores[n] is not None and len(queue_scores[n]):
            shared = queue_scores[n].shape[0]
            target_scores = torch.cat([queue_scores[n].detach().to(target_scores.dtype), target_scores])
        codes = sinkhorn_knopp(target_scores, iterations, epsilon, gather=gather,
                               num_shared=shared if queue_shared else 0)[shared:]
        for v, log_prediction in enumerate(log_predictions):
            if v == i:
                continue
            term = -(codes * log_prediction).sum(dim=1).mean()
            total = term if total is None else total + term
            pairs += 1
    return total / pairs
