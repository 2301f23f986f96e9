"""Process-group helpers. One process per device, launched by ``torchrun`` (gloo on CPU, nccl on GPU)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def setup_distributed(prefer_cuda: bool = True) -> DistInfo:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = prefer_cuda and torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank(), world_size=world_size(), local_rank=local_rank, device=device)


class _ContiguousGrad(torch.autograd.Function):
    """The identity, whose backward hands on a contiguous gradient: gloo's backward of the autograd all-gather
    reads a non-contiguous gradient wrongly (a loss that transposes after gathering makes one), silently."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, with gradients flowing back to each rank.

    The backward of ``torch.distributed.nn.functional.all_gather`` sums, over ranks, the gradient that each
    rank's loss sends to this rank's slice; with DDP's gradient averaging this equals the single-process
    gradient on the global batch (tested in tests/test_distributed.py).
    """
    if not is_distributed():
        return tensor
    import warnings

    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of a private API; still the public autograd gather
        warnings.simplefilter("ignore", FutureWarning)
        return _ContiguousGrad.apply(torch.cat(all_gather(tensor.contiguous()), dim=0))


def _ring_step(tensor: torch.Tensor, step: int) -> torch.Tensor:
    """Send ``tensor`` to rank ``rank + step`` and return what rank ``rank - step`` sent (modulo the world size);
    every rank must pass a tensor of the same shape."""
    size, me = dist.get_world_size(), dist.get_rank()
    tensor = tensor.contiguous()
    received = torch.empty_like(tensor)
    # both non-blocking before either waits: every rank sends and receives at once, so no ordering deadlocks
    requests = [dist.isend(tensor, (me + step) % size), dist.irecv(received, (me - step) % size)]
    for request in requests:
        request.wait()
    return received


class _SendToNextRank(torch.autograd.Function):
    """One step of a ring, differentiable. Forward: rank r sends to r + 1 and receives from r - 1. Backward, the
    same step the other way round: the gradient of what rank r received goes back to its sender r - 1, and rank
    r receives from r + 1 the gradient of what it sent."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return _ring_step(tensor, +1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _ring_step(grad, -1)


def send_to_next_rank_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """The ``tensor`` of the previous rank (rank r gets rank r - 1's, rank 0 the last rank's), with gradients
    flowing back to the rank that sent it; point-to-point, each rank sends and receives one tensor. Applied
    N - 1 times in a chain it walks every other rank's tensor past this rank (SigLIP's chunked loss). Every rank
    must call it equally often with tensors of one shape. Returns ``tensor`` itself when not distributed.
    """
    if not is_distributed():
        return tensor
    return _SendToNextRank.apply(tensor)


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, as a constant (labels, indices, queue entries).

    Every rank must pass a tensor of the same shape. Returns ``tensor`` itself when not distributed.
    """
    if not is_distributed():
        return tensor
    tensor = tensor.detach().contiguous()
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor)
    return torch.cat(parts, dim=0)


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum ``value`` over ranks into a new tensor (no autograd: use it for statistics, not for loss terms)."""
    if is_distributed():
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_from_main(value: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``value`` on every rank (for random draws that must agree across ranks)."""
    if is_distributed():
        value = value.clone()
        dist.broadcast(value, src=0)
    return value
