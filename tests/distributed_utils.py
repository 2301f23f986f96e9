"""Helpers to run a function in N gloo processes on CPU."""
from __future__ import annotations

import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank, world_size, port, fn, args, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_distributed(fn, world_size: int = 2, *args):
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` processes; return the list of results."""
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_entry, args=(world_size, free_port(), fn, args, out_dir), nprocs=world_size, join=True)
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(world_size)]


def assert_equal_to_one_rank(results: list[dict], reference: dict, atol: float = 1e-5, other_atol: float = 1e-6):
    """Every rank's ``{"loss", "grad_weight", "grad_bias", ...}`` equals the single-process ``reference`` on the
    global batch: the loss (averaged over ranks, as DDP does), the parameter gradients, and any other tensor the
    scenario returns (a centre, the SIGReg directions) to ``other_atol``."""
    for rank, result in enumerate(results):
        assert torch.allclose(result["loss"], reference["loss"].detach(), atol=atol), (rank, result["loss"],
                                                                                        reference["loss"])
        assert torch.allclose(result["grad_weight"], reference["grad_weight"], atol=atol), rank
        assert torch.allclose(result["grad_bias"], reference["grad_bias"], atol=atol), rank
        for key in set(result) - {"loss", "grad_weight", "grad_bias"}:
            assert torch.allclose(result[key], reference[key], atol=other_atol), (rank, key)

