"""``train.parallel=fsdp``: the method's parameters, gradients and optimizer state sharded over the ranks with
PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``; Zhao et al. 2023, "PyTorch FSDP: Experiences on Scaling
Fully Sharded Data Parallel"), for ViTs whose full copies DDP cannot hold.

The units: every block of a stack of like blocks (the transformer blocks of backbones, decoders, predictors and
EMA teachers alike; the residual blocks of a ResNet stage), outermost stacks first, then the method itself for
what is left (embeddings, norms, heads). Each unit's parameters are gathered just before it runs and freed after,
so the peak memory of the weights is about one block plus 1/world_size of the rest.

Every parameter is sharded along its first dimension on the same one-dimensional mesh, so a teacher block and
its student block hold corresponding local shards: the EMA update works shard by shard without communication.

Checkpoints hold the full (gathered) state, written by the main rank, with the optimizer state keyed by
parameter names: a sharded run resumes on any number of ranks. Evaluation and export read an unsharded copy
built from the same full state (:func:`full_method_state`).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor


def _is_stack(module: nn.Module, name: str) -> bool:
    """A ModuleList of blocks, or a Sequential of two or more (of one, where it is named ``blocks``), of one
    class, each holding parameters: timm's and selfsup's transformer blocks (a one-block decoder too), the
    stages of a ResNet."""
    blocks = list(module.children())
    least = 1 if isinstance(module, nn.ModuleList) or name == "blocks" else 2  # else a wrapper, not a stack
    return (isinstance(module, (nn.ModuleList, nn.Sequential)) and len(blocks) >= least
            and len({type(block) for block in blocks}) == 1
            and all(any(True for _ in block.parameters()) for block in blocks))


def shard_units(method: nn.Module) -> list[nn.Module]:
    """The modules that become their own FSDP unit: the blocks of the outermost stacks (:func:`_is_stack`; a
    stack inside a chosen block stays part of that block)."""
    units: list[nn.Module] = []

    def visit(module: nn.Module, name: str) -> None:
        if _is_stack(module, name):
            units.extend(module.children())
            return
        for child_name, child in module.named_children():
            visit(child, child_name)

    visit(method, "")
    return units


def shard_method(method: nn.Module) -> int:
    """Shard ``method`` in place (blocks first, then the root); returns the number of block units."""
    units = shard_units(method)
    for unit in units:
        fully_shard(unit)
    fully_shard(method)
    return len(units)


@contextmanager
def gradient_sync(method: nn.Module, enabled: bool):
    """Accumulation under FSDP: gradients are reduce-scattered only in the backward of a step's last
    micro-batch (the FSDP counterpart of DDP's ``no_sync``)."""
    method.set_requires_gradient_sync(enabled)
    try:
        yield
    finally:
        method.set_requires_gradient_sync(True)


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a sharded tensor (a collective: every rank calls it); any other tensor as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


_FULL_ON_MAIN = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_training_state(method: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The gathered state of the method and of the optimizer (keyed by parameter name), on the main rank, on
    the CPU; empty dicts on the other ranks. A collective: every rank calls it."""
    return get_state_dict(method, optimizer, options=_FULL_ON_MAIN)


def load_full_training_state(method: nn.Module, optimizer: torch.optim.Optimizer, method_state: dict,
                             optimizer_state: dict) -> None:
    """Load a gathered state (what :func:`full_training_state` returned, read by every rank) into the sharded
    method and its optimizer: each rank keeps its shard."""
    set_state_dict(method, optimizer, model_state_dict=method_state, optim_state_dict=optimizer_state,
                   options=StateDictOptions(full_state_dict=True))


def full_method_state(method: nn.Module) -> dict:
    """The method's gathered state on the main rank (empty elsewhere): to load into an unsharded copy for
    evaluation, pictures and export. A collective."""
    return get_model_state_dict(method, options=_FULL_ON_MAIN)
