"""The method placed for training: on its device, BatchNorm synchronised and DDP-wrapped (or, with
``train.parallel=fsdp``, sharded: :mod:`~selfsup.engine.sharding`) under several processes, channels_last, and
the backbone compiled (``train.compile``) with a fallback to eager where the compiler cannot run.
"""
from __future__ import annotations

import warnings
from contextlib import nullcontext

import torch
from torch.nn.parallel import DistributedDataParallel

from selfsup.config import TrainConfig
from selfsup.dist import DistInfo
from selfsup.engine.sharding import gradient_sync, shard_method
from selfsup.methods import Method, StepOutput


def uses_channels_last(tc: TrainConfig, device: torch.device) -> bool:
    """``train.channels_last`` where the device supports the memory format."""
    return tc.channels_last and device.type in ("cpu", "cuda")


def compile_backbone(backbone: torch.nn.Module) -> bool:
    """``train.compile``: compile the backbone in place (its state-dict keys, hence checkpoints and exports, stay
    as they are); False, with a warning, where torch.compile is unavailable on this machine."""
    try:
        backbone.compile()
    except Exception as error:
        warnings.warn(f"train.compile: torch.compile failed ({type(error).__name__}: {error}); training uncompiled",
                      stacklevel=2)
        return False
    return True


class PlacedModel:
    """Calls the method (through DDP, or sharded by FSDP, under several processes) on a batch already on the
    device.

    ``method`` is the placed method itself (its BatchNorm layers converted to SyncBatchNorm where asked): the
    module whose state is checkpointed and whose backbone is exported (under FSDP, through a gathered copy).
    ``sharded`` is True when its parameters are FSDP shards."""

    def __init__(self, method: Method, tc: TrainConfig, dist_info: DistInfo, channels_last: bool):
        device = dist_info.device
        method.to(device)
        # train.sync_batchnorm, or (when unset) the method's own wish: methods whose loss reads batch
        # statistics through BN (BYOL, SimSiam, SwAV, DINO with BN backbones) declare sync_batchnorm = True.
        sync_batchnorm = tc.sync_batchnorm if tc.sync_batchnorm is not None else method.sync_batchnorm
        if dist_info.world_size > 1 and sync_batchnorm:
            method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
        self.sharded = dist_info.world_size > 1 and tc.parallel == "fsdp"
        if channels_last and not self.sharded:  # FSDP shards contiguous parameters only (inputs stay NHWC)
            method.to(memory_format=torch.channels_last)
        self.method, self.channels_last = method, channels_last
        self.compiled = tc.compile and compile_backbone(method.backbone)  # True while it runs compiled
        self._compile_tried = False  # torch.compile is lazy: the first forward is where compilers fail
        self.ddp = None  # the DDP wrapper under several processes
        if self.sharded:
            self.shard_units = shard_method(method)  # in place: the method's own forward gathers and frees
        elif dist_info.world_size > 1:
            self.ddp = DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)
        self._forward = self.ddp if self.ddp is not None else method

    def no_sync(self, last_micro_batch: bool):
        """Under DDP (or FSDP), gradients are all-reduced (reduce-scattered) only in the backward of a step's last
        micro-batch."""
        if self.sharded:
            return gradient_sync(self.method, enabled=last_micro_batch)
        return nullcontext() if self.ddp is None or last_micro_batch else self.ddp.no_sync()

    def __call__(self, batch: dict) -> StepOutput:
        if not self.compiled or self._compile_tried:
            return self._forward(batch)
        self._compile_tried = True
        try:
            return self._forward(batch)
        except Exception as error:  # a compiler that cannot run on this machine must not end the run
            self.method.backbone._compiled_call_impl = None  # undoes nn.Module.compile
            self.compiled = False
            reason = next(iter(str(error).strip().splitlines()), "")
            warnings.warn(f"train.compile: compiling the backbone failed ({type(error).__name__}: {reason}); "
                          "training uncompiled", stacklevel=2)
            return self._forward(batch)
