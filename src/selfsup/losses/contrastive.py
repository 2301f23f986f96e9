"""Contrastive losses.

Distributed semantics: a loss here returns the mean over this rank's anchors, with negatives taken from the
global batch through an autograd-aware all_gather (labels as constants). Averaging the per-rank losses (which
DDP does to the gradients) gives exactly the single-process loss and gradient on the global batch. MoCo v2's
queue form of ``info_nce`` gathers nothing: its keys are constants and its queue is the same on every rank.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.dist import all_gather_no_grad, all_gather_with_grad, all_reduce_sum, rank, world_size


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


def info_nce(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor | None = None, temperature: float = 0.2,
             gather: bool = True, extra_negatives: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE (van den Oord et al. 2018) in its two joint-embedding forms; mean cross entropy over local queries.

    ``query`` and ``key`` are (B, D); ``key[i]`` is the positive of ``query[i]``. Both are L2-normalised here and
    the loss is computed in float32 whatever the autocast dtype.

    - ``negatives`` (K, D) given: MoCo v2 (He et al., CVPR 2020; Chen et al. 2020). Logits of query i are
      ``[q_i . k_i, q_i . negatives]`` with the positive at index 0. Keys are not gathered: they come from the
      momentum encoder and are constants (the caller passes them detached); a queue filled by
      :class:`selfsup.methods.parts.queue.FeatureQueue` is already identical on every rank.
    - ``negatives`` None: MoCo v3 (Chen et al., ICCV 2021) and NNCLR (Dwibedi et al., ICCV 2021). The candidates
      of query i are all keys of the global batch, ``all_keys`` gathered with autograd when ``gather``; the
      positive is at the global index of the query. (MoCo v3 scales the loss by 2 * temperature in the method.)

    ``extra_negatives`` (B, M, D): per-query additional negatives (MoCHi, :func:`mochi_negatives`), appended to
    each query's logits; they are normalised here too.

    Distributed: the value is the mean over this rank's queries; averaging over ranks (which DDP does to the
    gradients) gives the single-process loss and gradient on the global batch.
    """
    if query.shape != key.shape or query.ndim != 2:
        raise ValueError(f"info_nce expects query and key of one (B, D) shape, got {tuple(query.shape)} and "
                         f"{tuple(key.shape)}")
    query = F.normalize(query.float(), dim=1)
    key = F.normalize(key.float(), dim=1)
    batch = query.shape[0]
    if negatives is not None:
        if negatives.ndim != 2 or negatives.shape[1] != query.shape[1]:
            raise ValueError(f"info_nce negatives must be (K, {query.shape[1]}), got {tuple(negatives.shape)}")
        negatives = F.normalize(negatives.float(), dim=1)
        logits = torch.cat([(query * key).sum(dim=1, keepdim=True), query @ negatives.T], dim=1)
        targets = torch.zeros(batch, dtype=torch.long, device=query.device)
    else:
        all_keys = all_gather_with_grad(key) if gather else key
        offset = rank() * batch if all_keys.shape[0] > batch else 0
        logits = query @ all_keys.T
        targets = torch.arange(batch, device=query.device) + offset
    if extra_negatives is not None:
        if extra_negatives.ndim != 3 or extra_negatives.shape[0] != batch or extra_negatives.shape[2] != query.shape[1]:
            raise ValueError(f"info_nce extra_negatives must be ({batch}, M, {query.shape[1]}), got "
                             f"{tuple(extra_negatives.shape)}")
        extra = F.normalize(extra_negatives.float(), dim=2)
        logits = torch.cat([logits, torch.einsum("bd,bmd->bm", query, extra)], dim=1)
    return F.cross_entropy(logits / temperature, targets)


def dense_info_nce(queries: torch.Tensor, positives: torch.Tensor, owners: torch.Tensor, image_keys: torch.Tensor,
                   temperature: float = 0.2, gather: bool = True) -> torch.Tensor:
    """DenseCL's dense contrast (Wang et al., CVPR 2021, eq. 3) with the batch's images as its negatives.

    ``queries`` and ``positives`` (M, D): feature-map cells and their matched cells in the other view;
    ``owners`` (M,): the local index of each query's image; ``image_keys`` (B, D): one vector per local image
    (the mean of its dense keys). The logits of query m are ``[q_m . p_m, q_m . image_keys_j for every other image
    j of the global batch]``: the query's own image is not its negative. L2-normalised, float32.

    Distributed: ``image_keys`` are gathered with autograd, and the sum over this rank's queries is divided by
    the global number of queries over the number of ranks, so that DDP's average over ranks is the
    single-process mean over all queries however unevenly the matched cells fall on the ranks."""
    if queries.shape != positives.shape or queries.ndim != 2 or owners.shape != queries.shape[:1]:
        raise ValueError(f"dense_info_nce expects queries and positives of one (M, D) shape and owners (M,), got "
                         f"{tuple(queries.shape)}, {tuple(positives.shape)} and {tuple(owners.shape)}")
    queries = F.normalize(queries.float(), dim=1)
    positives = F.normalize(positives.float(), dim=1)
    keys = F.normalize(image_keys.float(), dim=1)
    batch = keys.shape[0]
    all_keys = all_gather_with_grad(keys) if gather else keys
    offset = rank() * batch if all_keys.shape[0] > batch else 0
    negatives = (queries @ all_keys.T).float()  # (M, global batch); float: autocast makes the product bf16
    negatives = negatives.index_put((torch.arange(len(queries), device=queries.device), owners + offset),
                                    torch.tensor(float("-inf"), device=queries.device))
    logits = torch.cat([(queries * positives).sum(dim=1, keepdim=True), negatives], dim=1) / temperature
    summed = F.cross_entropy(logits, torch.zeros(len(queries), dtype=torch.long, device=queries.device),
                             reduction="sum")
    count = torch.tensor(float(len(queries)), device=queries.device)
    if all_keys.shape[0] > batch:  # gathered: the mean number of queries per rank
        count = all_reduce_sum(count) / world_size()
    return summed / count.clamp_min(1.0)


@torch.no_grad()
def mochi_negatives(query: torch.Tensor, negatives: torch.Tensor, num_mix_pairs: int, num_mix_query: int,
                    generator: torch.Generator | None = None, num_hard: int | None = 1024) -> torch.Tensor:
    """Synthetic hard negatives, MoCHi (Kalantidis et al., "Hard Negative Mixing for Contrastive Learning",
    NeurIPS 2020, section 4).

    For each query, the queue ``negatives`` (K, D) is ranked by cosine similarity and the ``num_hard`` most
    similar (the paper's N; all K when None or larger) are kept. Then:

    - ``num_mix_pairs`` (s) mixes ``h = a n_i + (1 - a) n_j`` of two random hard negatives, a ~ U(0, 1);
    - ``num_mix_query`` (s') mixes ``h' = b q + (1 - b) n_j`` of the query with a random hard negative,
      b ~ U(0, 0.5), so the query never dominates and h' stays a negative.

    Each mix is L2-normalised. Returns (B, s + s', D) in float32, detached (the paper does not backpropagate
    through the synthetic points); pass it as ``info_nce(..., extra_negatives=...)``. Randomness comes from
    ``generator`` (on the device of ``query``) when given. Purely per-query: no communication.
    """
    if query.ndim != 2 or negatives.ndim != 2 or query.shape[1] != negatives.shape[1]:
        raise ValueError(f"mochi_negatives expects query (B, D) and negatives (K, D), got {tuple(query.shape)} "
                         f"and {tuple(negatives.shape)}")
    if negatives.shape[0] == 0:
        raise ValueError("mochi_negatives needs a non-empty set of negatives to mix")
    query = F.normalize(query.detach().float(), dim=1)
    negatives = F.normalize(negatives.detach().float(), dim=1)
    batch, device = query.shape[0], query.device
    hard_count = negatives.shape[0] if num_hard is None else max(1, min(num_hard, negatives.shape[0]))
    hard_index = (query @ negatives.T).topk(hard_count, dim=1).indices  # (B, N)
    hard = negatives[hard_index]  # (B, N, D)

    def pick(count: int) -> torch.Tensor:  # (B, count, D): random hard negatives, drawn per query
        choice = torch.randint(hard_count, (batch, count), device=device, generator=generator)
        return torch.gather(hard, 1, choice.unsqueeze(-1).expand(-1, -1, hard.shape[2]))

    alpha = torch.rand(batch, num_mix_pairs, 1, device=device, generator=generator)
    pair_mixes = alpha * pick(num_mix_pairs) + (1 - alpha) * pick(num_mix_pairs)
    beta = 0.5 * torch.rand(batch, num_mix_query, 1, device=device, generator=generator)
    query_mixes = beta * query.unsqueeze(1) + (1 - beta) * pick(num_mix_query)
    return F.normalize(torch.cat([pair_mixes, query_mixes], dim=1), dim=2)


def supcon(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1,
           gather: bool = True) -> torch.Tensor:
    """Supervised contrastive loss L^sup_out (Khosla et al., NeurIPS 2020, eq. 2).

    ``embeddings`` (B, V, D) holds V views of each sample, ``labels`` (B,). Every local view is an anchor; its
    positives P(i) are all other views in the global batch with the same label (the other views of its own
    sample included); its denominator runs over all other views A(i). Per anchor the log-probabilities of the
    positives are averaged (the "out" form), then anchors are averaged. Anchors without any positive (V = 1 and
    a label seen once) are left out of the mean. Embeddings are L2-normalised; float32 throughout. (The
    reference code's extra factor temperature / base_temperature is 1 at the default 0.07/0.07 and is left out.)

    Distributed: embeddings are gathered with autograd and labels as constants; the value is the mean over
    this rank's anchors, so averaging over ranks (as DDP does) gives the single-process loss and gradient
    when every rank has the same number of anchors with positives (always the case for V >= 2).
    """
    if embeddings.ndim != 3 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"supcon expects embeddings (B, V, D) and labels (B,), got {tuple(embeddings.shape)} and "
                         f"{tuple(labels.shape)}")
    batch, views, _ = embeddings.shape
    anchors = F.normalize(embeddings.float(), dim=2).flatten(0, 1)  # (B*V, D), sample-major
    anchor_labels = labels.repeat_interleave(views)
    if gather:
        candidates, candidate_labels = all_gather_with_grad(anchors), all_gather_no_grad(anchor_labels)
        offset = rank() * batch * views if candidates.shape[0] > anchors.shape[0] else 0
    else:
        candidates, candidate_labels, offset = anchors, anchor_labels, 0
    logits = anchors @ candidates.T / temperature
    rows = torch.arange(anchors.shape[0], device=anchors.device)
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[rows, rows + offset] = True
    logits = logits.masked_fill(is_self, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (anchor_labels[:, None] == candidate_labels[None, :]) & ~is_self
    count = positive.sum(dim=1)
    # masked_fill, not multiplication: log_prob is -inf on the diagonal and 0 * -inf would be NaN
    mean_log_prob = log_prob.masked_fill(~positive, 0.0).sum(dim=1) / count.clamp(min=1)
    has_positive = count > 0
    if not has_positive.any():
        return anchors.sum() * 0.0  # keeps the graph (and DDP's reducer) intact with a zero loss
    return -mean_log_prob[has_positive].mean()
