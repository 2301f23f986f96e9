"""Sparse (masked) convolution for ConvNets, as SparK simulates it (Tian et al., ICLR 2023, section 3.2): a ConvNet
run on the visible patches only, as if the masked ones did not exist.

Inside :func:`sparse_masking`, every convolution and pooling layer of the module has its output multiplied by the
patch mask resampled (nearest) to the output's resolution, so masked regions stay exactly zero through the whole
network and never leak into visible ones at the next layer's borders more than a zero-padded border would; every
BatchNorm normalises with the statistics of the visible positions only (SparK's sparse BatchNorm; running
statistics are updated from them too) and zeroes the masked ones. On a fully visible input nothing changes: the
outputs are those of the dense network (tests/test_spark.py). Under DDP the sparse BatchNorm uses this rank's
visible positions (no SyncBatchNorm).
"""
from __future__ import annotations

import contextlib
import types

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

_MASKED_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def keep_at(keep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, 1, h, w) 0/1 visibility resampled (nearest) to ``like``'s spatial size, in its dtype."""
    if keep.shape[-2:] != like.shape[-2:]:
        keep = F.interpolate(keep, size=like.shape[-2:], mode="nearest")
    return keep.to(like.dtype)


def sparse_batch_norm(module: _BatchNorm, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """BatchNorm over the visible positions of ``x`` (B, C, H, W) only; masked positions come out zero."""
    weights = keep_at(keep, x)
    if module.training or module.running_mean is None:
        count = weights.sum() * 1.0
        mean = (x * weights).sum(dim=(0, 2, 3)) / count.clamp_min(1)
        var = ((x - mean[None, :, None, None]) ** 2 * weights).sum(dim=(0, 2, 3)) / count.clamp_min(1)
        if module.training and module.running_mean is not None:
            with torch.no_grad():
                momentum = 0.1 if module.momentum is None else module.momentum
                unbiased = var * count / (count - 1).clamp_min(1)
                module.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                module.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
                module.num_batches_tracked.add_(1)
    else:
        mean, var = module.running_mean, module.running_var
    y = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + module.eps)
    if module.affine:
        y = y * module.weight[None, :, None, None] + module.bias[None, :, None, None]
    return y * weights


@contextlib.contextmanager
def sparse_masking(module: nn.Module, keep: torch.Tensor):
    """Run ``module`` as a sparse ConvNet on the positions where ``keep`` (B, 1, h, w), 1 = visible, is set."""
    handles, patched = [], []

    def mask_output(layer, inputs, output):
        return output * keep_at(keep, output)

    try:
        for layer in module.modules():
            if isinstance(layer, _MASKED_LAYERS):
                handles.append(layer.register_forward_hook(mask_output))
            elif isinstance(layer, _BatchNorm):
                layer.forward = types.MethodType(lambda self, x: sparse_batch_norm(self, x, keep), layer)
                patched.append(layer)
        yield module
    finally:
        for handle in handles:
            handle.remove()
        for layer in patched:
            del layer.forward  # back to the class's forward
