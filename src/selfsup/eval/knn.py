"""Weighted k-nearest-neighbour classification of frozen features.

The protocol of Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination"
(2018), as used by DINO and most self-supervised papers since: features are L2-normalised, similarity is
the cosine, the ``k`` most similar training samples vote for their label with weight ``exp(sim / T)``, and
the class with the largest total weight wins.

The similarity matrix is never materialised. Queries are processed ``query_chunk`` at a time, and for each
query chunk the training bank is scanned ``train_chunk`` rows at a time while a running top-``max(ks)`` list
is merged with the best candidates of each bank chunk. Beyond the inputs, memory is therefore
``O(query_chunk * train_chunk + query_chunk * max(ks))`` plus one L2-normalised copy of the bank, made once
(of one bank chunk at a time for banks over :data:`PRENORMALIZE_BYTES`), whatever the number of queries: in practice a few times ``query_chunk * train_chunk * 4``
bytes, i.e. some hundreds of MB with the defaults; lower the chunk sizes to use less. Once a query's running
list is full, a bank chunk only contributes the entries strictly above its current k-th similarity, which is
usually far cheaper than a top-k over the chunk.

The vote weights are computed as ``exp((sim - max_sim) / T)`` with ``max_sim`` the query's best similarity:
a per-query factor that leaves the argmax unchanged and keeps the weights finite for any ``T``.

Determinism: neighbours are ranked by (similarity descending, training index ascending), so equal
similarities are resolved in favour of the earlier training sample, independently of the chunk sizes.
Votes are accumulated in float64 in neighbour-rank order, and equal vote totals go to the smallest class
index. (With general float features, the similarities themselves can differ in the last bit between
different chunk sizes, because the matrix-multiply kernel may sum in a different order; with exactly
representable similarities the result does not depend on the chunking at all.)
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.eval.tensors import as_tensor

__all__ = ["knn_classify", "knn_accuracy"]

#: Up to this size (4 GiB), the L2-normalised bank is made once per call rather than once per query chunk.
PRENORMALIZE_BYTES = 4 << 30


def _check_ks(ks: Iterable[int] | int) -> tuple[int, ...]:
    if isinstance(ks, int):
        ks = (ks,)
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks must name at least one k")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"every k must be a positive integer, got {k!r}")
    return tuple(int(k) for k in ks)


def _topk_low_index_ties(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of each row of ``sims`` (column indices and values, in no particular order).

    Where several entries equal the k-th largest value and not all of them fit, the ones with the smallest
    column index are kept, so that the selected *set* is fully determined by the values.
    """
    if k >= sims.shape[1]:  # every entry is selected: no tie can be cut
        return sims.topk(k, dim=1, largest=True, sorted=False)
    # One more than needed, sorted (k + 1 values per row: cheap next to the pass over the row), so that a row
    # where more than k entries reach the k-th value shows as a (k+1)-th value equal to it, without another pass
    # over the whole row; topk may then have kept an arbitrary subset of the ties.
    vals, idx = sims.topk(k + 1, dim=1, largest=True, sorted=True)
    kth = vals[:, k - 1:k]
    ambiguous = (vals[:, k] == vals[:, k - 1]).nonzero().squeeze(1)
    vals, idx = vals[:, :k].contiguous(), idx[:, :k].contiguous()
    group = 128  # bounds the temporary masks below to 128 x train_chunk
    for start in range(0, ambiguous.numel(), group):
        rows = ambiguous[start:start + group]
        s, th = sims[rows], kth[rows]
        greater = s > th
        equal = s == th
        need = k - greater.sum(dim=1, keepdim=True)
        keep = greater | (equal & (equal.cumsum(dim=1, dtype=torch.int32) <= need))
        cols = keep.nonzero()[:, 1].view(rows.numel(), k)  # exactly k per row, row-major order
        idx[rows] = cols
        vals[rows] = s.gather(1, cols)
    return vals, idx


def _all_finite(x: torch.Tensor) -> bool:
    """No NaN or infinity in ``x``: two reductions (max and min propagate NaN), no mask as large as ``x``."""
    return x.numel() == 0 or bool(torch.isfinite(torch.stack([x.amax(), x.amin()])).all())


def _normalized_bank(train_features: torch.Tensor, t0: int, t1: int, device, check: bool = True) -> torch.Tensor:
    """Rows ``t0:t1`` of the bank on ``device``, float32, L2-normalised (checked finite when ``check``)."""
    bank = train_features[t0:t1].to(device=device, dtype=torch.float32)
    if check and not _all_finite(bank):
        raise ValueError(f"train_features[{t0}:{t1}] contains NaN or infinite values")
    return F.normalize(bank, dim=1)


def _sort_candidates(vals: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Order each row by (value descending, index ascending) and keep the first ``k`` columns."""
    by_index = idx.argsort(dim=1, stable=True)
    vals, idx = vals.gather(1, by_index), idx.gather(1, by_index)
    by_value = vals.argsort(dim=1, descending=True, stable=True)[:, :k]
    return vals.gather(1, by_value), idx.gather(1, by_value)


def _merge_chunk(sims: torch.Tensor, offset: int, best_vals: torch.Tensor, best_idx: torch.Tensor, k: int):
    """Merge one bank chunk's similarities (columns are bank rows ``offset, offset + 1, ...``) into the
    running lists ``best_vals`` / ``best_idx`` (sorted, at most ``k`` columns); returns the new lists."""
    n = sims.shape[0]
    if best_vals.shape[1] == k:
        # Once the list is full, only entries strictly above the current k-th value can enter: an entry
        # equal to it comes later in the bank than every current holder, so it loses the tie. Usually few
        # entries pass, which is much cheaper than a top-k over the whole chunk.
        passes = sims > best_vals[:, -1:]
        total = int(torch.count_nonzero(passes))  # a bool sum() would first copy the mask to int64
        if total == 0:
            return best_vals, best_idx
        if total <= n * k:
            rows, cols = passes.nonzero(as_tuple=True)  # row-major: ascending column within each row
            counts = torch.bincount(rows, minlength=n)
            width = int(counts.max())
            if width <= k:
                slot = torch.arange(rows.numel(), device=sims.device) - (counts.cumsum(0) - counts)[rows]
                vals = sims.new_full((n, width), -math.inf)  # padding sorts after every real similarity
                idx = torch.full((n, width), -1, dtype=torch.long, device=sims.device)
                vals[rows, slot] = sims[rows, cols]
                idx[rows, slot] = cols + offset
                return _sort_candidates(torch.cat([best_vals, vals], 1), torch.cat([best_idx, idx], 1), k)
    vals, idx = _topk_low_index_ties(sims, min(k, sims.shape[1]))
    return _sort_candidates(torch.cat([best_vals, vals], 1), torch.cat([best_idx, idx + offset], 1), k)


def knn_classify(
    train_features,
    train_labels,
    test_features,
    ks=(20, 200),
    temperature: float = 0.07,
    num_classes: int | None = None,
    query_chunk: int = 1024,
    train_chunk: int = 65536,
    device=None,
) -> dict[int, torch.Tensor]:
    """Temperature-weighted kNN predictions for every ``k`` in ``ks``.

    Args:
        train_features: (N, D) float tensor (or numpy array), the labelled bank. Need not be normalised.
        train_labels: (N,) integer labels in ``[0, num_classes)``.
        test_features: (M, D) float tensor (or numpy array), the queries.
        ks: the neighbourhood sizes; a ``k`` larger than ``N`` uses all ``N`` training samples.
        temperature: ``T`` in the vote weight ``exp(cos / T)``.
        num_classes: number of classes; default ``max(train_labels) + 1``.
        query_chunk, train_chunk: block sizes of the similarity computation (memory vs. speed only;
            they do not change the result beyond last-bit effects of the matrix multiply).
        device: where to compute (e.g. ``"cuda"`` with features kept on the CPU); default: the device of
            ``test_features``. Chunks are moved there one at a time.

    Returns:
        ``{k: predictions}`` with int64 CPU tensors of shape (M,), keyed by the requested ``k``.
    """
    train_features = as_tensor(train_features, "train_features")
    test_features = as_tensor(test_features, "test_features")
    train_labels = as_tensor(train_labels, "train_labels")
    ks = _check_ks(ks)
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ValueError(
            f"features must be 2-D (samples, dims); got train {tuple(train_features.shape)}, "
            f"test {tuple(test_features.shape)}"
        )
    n_train, dim = train_features.shape
    n_test = test_features.shape[0]
    if test_features.shape[1] != dim:
        raise ValueError(f"feature widths differ: train has {dim}, test has {test_features.shape[1]}")
    if n_train == 0:
        raise ValueError("the training bank is empty")
    train_labels = train_labels.reshape(-1)
    if train_labels.numel() != n_train:
        raise ValueError(f"{train_labels.numel()} train labels for {n_train} train features")
    if train_labels.is_floating_point() or train_labels.is_complex():
        raise TypeError(f"train_labels must be integers, got {train_labels.dtype}")
    train_labels = train_labels.long()
    if not (temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if query_chunk < 1 or train_chunk < 1:
        raise ValueError("query_chunk and train_chunk must be >= 1")
    if train_labels.min() < 0:
        raise ValueError("train labels must be >= 0")
    max_label = int(train_labels.max())
    if num_classes is None:
        num_classes = max_label + 1
    elif max_label >= num_classes:
        raise ValueError(f"train label {max_label} does not fit num_classes={num_classes}")
    for name, feats in (("train_features", train_features), ("test_features", test_features)):
        if not feats.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {feats.dtype}")

    device = torch.device(device) if device is not None else test_features.device
    train_labels = train_labels.to(device)
    kmax = min(max(ks), n_train)
    effective = {k: min(k, n_train) for k in ks}
    snapshot_at: dict[int, list[int]] = {}
    for k, keff in effective.items():
        snapshot_at.setdefault(keff, []).append(k)
    preds = {k: torch.empty(n_test, dtype=torch.long) for k in ks}

    # The bank is normalised once for all query chunks (one float32 copy of it on ``device``) unless that copy
    # would pass PRENORMALIZE_BYTES; then each bank chunk is normalised anew for every query chunk.
    whole = None
    if n_train * dim * 4 <= PRENORMALIZE_BYTES:
        whole = torch.empty((n_train, dim), dtype=torch.float32, device=device)
        for t0 in range(0, n_train, train_chunk):
            whole[t0:t0 + train_chunk] = _normalized_bank(train_features, t0, min(t0 + train_chunk, n_train), device)
    for q0 in range(0, n_test, query_chunk):
        q1 = min(q0 + query_chunk, n_test)
        queries = test_features[q0:q1].to(device=device, dtype=torch.float32)
        if not _all_finite(queries):
            raise ValueError(f"test_features[{q0}:{q1}] contains NaN or infinite values")
        queries = F.normalize(queries, dim=1)
        best_vals = queries.new_empty((q1 - q0, 0))
        best_idx = torch.empty((q1 - q0, 0), dtype=torch.long, device=device)
        for t0 in range(0, n_train, train_chunk):
            t1 = min(t0 + train_chunk, n_train)
            if whole is not None:
                bank = whole[t0:t1]
            else:
                bank = _normalized_bank(train_features, t0, t1, device, check=q0 == 0)
            sims = queries @ bank.T
            del bank
            best_vals, best_idx = _merge_chunk(sims, t0, best_vals, best_idx, kmax)
            del sims
        # Vote, in neighbour-rank order, in float64; shifting by the row maximum leaves the argmax
        # unchanged and keeps exp() finite for any temperature.
        sims64 = best_vals.double()
        weights = torch.exp((sims64 - sims64[:, :1]) / temperature)
        labels = train_labels[best_idx]
        votes = torch.zeros((q1 - q0, num_classes), dtype=torch.float64, device=device)
        rows = torch.arange(q1 - q0, device=device)
        for j in range(kmax):
            votes[rows, labels[:, j]] += weights[:, j]
            for k in snapshot_at.get(j + 1, ()):
                preds[k][q0:q1] = votes.argmax(dim=1).cpu()  # argmax: first maximum on ties
    return preds


def knn_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    ks=(20, 200),
    temperature: float = 0.07,
    **kw,
) -> dict[int, float]:
    """Top-1 accuracy of :func:`knn_classify` for every ``k`` in ``ks``; keyword arguments are passed on."""
    test_labels = as_tensor(test_labels, "test_labels").reshape(-1).long().cpu()
    n_test = as_tensor(test_features, "test_features").shape[0]
    if test_labels.numel() != n_test:
        raise ValueError(f"{test_labels.numel()} test labels for {n_test} test features")
    if n_test == 0:
        raise ValueError("the test set is empty")
    preds = knn_classify(train_features, train_labels, test_features, ks=ks, temperature=temperature, **kw)
    return {k: float((p == test_labels).double().mean()) for k, p in preds.items()}
