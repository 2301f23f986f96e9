"""A first-in first-out queue of features shared by all ranks (MoCo v2 negatives, NNCLR support set, SwAV queue)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from selfsup.dist import all_gather_no_grad


class FeatureQueue(nn.Module):
    """A ring buffer of ``size`` feature vectors of ``dim`` floats, kept in buffers so that it moves with
    ``.to(device)`` and is saved in ``state_dict`` (and therefore in checkpoints and resumes).

    It starts empty: ``features`` is zeros and ``filled`` counts the valid rows, so that no method ever uses
    made-up entries (random unit vectors would be meaningless nearest neighbours for NNCLR and wrong samples
    for SwAV's equipartition). :meth:`get` returns only the valid rows; while the queue fills up they are
    rows ``0 .. filled - 1``. ``pointer`` is where the next key goes.

    Distributed: :meth:`enqueue` all-gathers the keys of every rank (as constants) in rank order before
    writing, so every rank holds the same queue, equal to the queue of one process fed the global batch.
    Every rank must enqueue the same number of keys.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"FeatureQueue needs a positive size and dim, got size={size}, dim={dim}")
        self.size, self.dim = size, dim
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.filled)

    @property
    def full(self) -> bool:
        return int(self.filled) == self.size

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, gather: bool = True) -> None:
        """Append ``keys`` (B, dim) from this rank (and, with ``gather``, from every rank in rank order),
        overwriting the oldest entries once full."""
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"FeatureQueue.enqueue expects (B, {self.dim}) keys, got {tuple(keys.shape)}")
        keys = keys.detach()
        if gather:
            keys = all_gather_no_grad(keys)
        keys = keys.to(self.features.dtype)
        count, start = keys.shape[0], int(self.pointer)
        if count > self.size:  # only the newest `size` keys survive; write them where they would have landed
            start = (start + count - self.size) % self.size
            keys = keys[-self.size:]
        index = (start + torch.arange(keys.shape[0], device=self.features.device)) % self.size
        self.features[index] = keys.to(self.features.device)
        self.pointer.fill_((int(self.pointer) + count) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + count))

    def get(self) -> torch.Tensor:
        """The valid rows, as a detached copy: a view would be changed in place by the next :meth:`enqueue`,
        which autograd refuses when the loss that used it has not been backpropagated yet (MoCo enqueues inside
        the forward)."""
        return self.features[: int(self.filled)].clone()

    @torch.no_grad()
    def nearest(self, query: torch.Tensor) -> torch.Tensor:
        """The queue entry most similar (cosine) to each row of ``query`` (B, dim): NNCLR's support-set nearest
        neighbour (Dwibedi et al., ICCV 2021, eq. 2). Detached, in the dtype of ``query``. While the queue is
        still empty each query is its own neighbour (returned detached), which reduces NNCLR to SimCLR for
        that step. Local: the support set is already the same on every rank."""
        if query.ndim != 2 or query.shape[1] != self.dim:
            raise ValueError(f"FeatureQueue.nearest expects (B, {self.dim}) queries, got {tuple(query.shape)}")
        support = self.features[: int(self.filled)]
        if support.shape[0] == 0:
            return query.detach().clone()
        similarity = F.normalize(query.detach().float(), dim=1) @ F.normalize(support.float(), dim=1).T
        return support[similarity.argmax(dim=1)].to(query.dtype)
