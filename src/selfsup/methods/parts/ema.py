"""Exponential-moving-average teachers (momentum encoders), as in MoCo (He et al., CVPR 2020), BYOL (Grill
et al., NeurIPS 2020), DINO (Caron et al., ICCV 2021) and I-JEPA (Assran et al., CVPR 2023).

The teacher is a frozen deep copy owned by the method, so it lives in the method's ``state_dict`` and every
checkpoint holds it; nothing here keeps state of its own. Under DDP each rank updates its teacher from the
same (all-reduced) student weights, so teachers stay identical across ranks without communication. Under FSDP
(``train.parallel=fsdp``) teacher and student parameters are sharded alike, and each rank updates its own shard.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.distributed.tensor import DTensor


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients disabled (the teacher starts equal to the student)."""
    teacher = copy.deepcopy(module)
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def _shard(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of an FSDP parameter (teacher and student shards correspond); any other as it is."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameters and float buffers alike.

    Buffers (BatchNorm running statistics) are averaged too, so the teacher's BN behaves like the student's
    averaged over time instead of freezing at initialisation."""
    teacher_params = [_shard(p) for p in teacher.parameters()]
    student_params = [_shard(p.detach()) for p in student.parameters()]
    if len(teacher_params) != len(student_params):
        raise ValueError("teacher and student have different parameter lists")
    torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)
    for t_buf, s_buf in zip(teacher.buffers(), student.buffers()):
        if t_buf.dtype.is_floating_point:
            t_buf.lerp_(s_buf, 1.0 - momentum)
        else:
            t_buf.copy_(s_buf)
