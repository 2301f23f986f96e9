"""Image retrieval on frozen features: Recall@k and mAP@R with cosine similarity.

Queries are the test split, the database is the training split; an item is relevant to a query when it
has the query's label.

- Recall@k (as in deep metric learning, e.g. Oh Song et al., "Deep Metric Learning via Lifted Structured
  Feature Embedding", CVPR 2016): the fraction of queries with at least one relevant item among their ``k``
  most similar database items.
- mAP@R (Musgrave et al., "A Metric Learning Reality Check", ECCV 2020): for a query with ``R`` relevant
  items in the database, ``AP@R = (1/R) * sum_{i<=R} P@i * rel(i)`` over its top ``R`` results, where ``P@i``
  is the precision of the top ``i``. Unlike Recall@k it rewards ranking *all* same-class items first. A
  query whose class has no item in the database is left out of the mean (it has nothing to retrieve).

Memory: the queries are processed in chunks of ``max(1, block_elements // database_size)`` rows, so the
temporaries (one chunk's similarities, its ranked indices and relevance flags) stay within a few times
``block_elements * 4`` bytes (some hundreds of MiB with the default 2**24) whatever the sizes. Full rows are
needed because ``R`` can be as large as a whole class.
Among exactly equal similarities the order is torch.topk's (deterministic on a given machine).
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F

__all__ = ["retrieval_metrics", "DEFAULT_RECALL_AT"]

DEFAULT_RECALL_AT: tuple[int, ...] = (1, 5)


@torch.no_grad()
def retrieval_metrics(database, database_labels, queries, query_labels, *,
                      recall_at: Iterable[int] = DEFAULT_RECALL_AT, block_elements: int = 2 ** 24,
                      device=None) -> dict[str, float]:
    """``{"recall@k": ..., "map@r": ...}`` for the queries against the database (cosine similarity)."""
    database = torch.as_tensor(database)
    queries = torch.as_tensor(queries)
    db_labels = torch.as_tensor(database_labels).reshape(-1).long()
    q_labels = torch.as_tensor(query_labels).reshape(-1).long()
    recall_at = tuple(int(k) for k in recall_at)
    if any(k < 1 for k in recall_at):
        raise ValueError(f"recall@k needs k >= 1, got {recall_at}")
    if database.ndim != 2 or queries.ndim != 2 or database.shape[1] != queries.shape[1]:
        raise ValueError(f"features must be 2-D with the same width; got database {tuple(database.shape)}, "
                         f"queries {tuple(queries.shape)}")
    if db_labels.numel() != database.shape[0] or q_labels.numel() != queries.shape[0]:
        raise ValueError("number of labels and number of feature rows differ")
    if database.shape[0] == 0 or queries.shape[0] == 0:
        raise ValueError("empty database or query set")
    device = torch.device(device) if device is not None else database.device
    n_db = database.shape[0]
    db = F.normalize(database.to(device=device, dtype=torch.float32), dim=1)
    db_labels = db_labels.to(device)
    # R for every query: how many database items share its label.
    class_sizes = torch.bincount(db_labels, minlength=int(max(db_labels.max(), q_labels.max())) + 1)
    chunk = max(1, int(block_elements) // n_db)

    hits = {k: 0 for k in recall_at}
    ap_sum, ap_count = 0.0, 0
    kmax = min(max(recall_at), n_db) if recall_at else 0
    for q0 in range(0, queries.shape[0], chunk):
        q = F.normalize(queries[q0:q0 + chunk].to(device=device, dtype=torch.float32), dim=1)
        labels = q_labels[q0:q0 + chunk].to(device)
        sims = q @ db.T
        r = class_sizes[labels]
        depth = max(kmax, int(r.max()))
        order = sims.topk(min(depth, n_db), dim=1, largest=True, sorted=True).indices
        del sims
        relevant = db_labels[order] == labels[:, None]  # (chunk, depth), rank order
        for k in recall_at:
            hits[k] += int(relevant[:, :k].any(dim=1).sum())
        # AP@R: precision at every rank i <= R where the i-th result is relevant, summed, divided by R.
        ranks = torch.arange(1, relevant.shape[1] + 1, device=device)
        within_r = ranks[None, :] <= r[:, None]
        rel = (relevant & within_r).float()  # float32 counts are exact up to 2**24 relevant items
        precision = rel.cumsum(dim=1) / ranks[None, :]
        has_any = r > 0
        ap = (precision * rel).sum(dim=1, dtype=torch.float64)[has_any] / r[has_any]
        ap_sum += float(ap.sum())
        ap_count += int(has_any.sum())
    n_q = queries.shape[0]
    out = {f"recall@{k}": hits[k] / n_q for k in recall_at}
    out["map@r"] = ap_sum / ap_count if ap_count else float("nan")
    return out
