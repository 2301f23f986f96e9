"""Precision and memory-format choices.

``train.precision=auto``: bf16 autocast on CUDA devices that support it and on CPUs with native bf16 matmul
(:func:`selfsup.cpu.cpu_has_fast_bf16`, which honours ``SELFSUP_CPU_BF16=0|1``), fp32 elsewhere.
"""
from __future__ import annotations

import contextlib

import torch

from selfsup.cpu import cpu_has_fast_bf16


def resolve_precision(requested: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
