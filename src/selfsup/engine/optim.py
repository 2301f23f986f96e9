"""Optimizers (AdamW, SGD, LARS) and the warm-up + cosine learning-rate schedule."""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from selfsup.config import OptimConfig


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio: You, Gitman, Ginsburg, "Large Batch Training of
    Convolutional Networks", 2017 (arXiv:1708.03888), as used by SimCLR and BYOL.

    Groups with ``lars_exclude=True`` (biases, norm parameters) get neither weight decay nor adaptation.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, trust_coefficient: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if not group["lars_exclude"]:
                    if group["weight_decay"]:
                        update = update.add(p, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    trust = torch.where((param_norm > 0) & (update_norm > 0),
                                        group["trust_coefficient"] * param_norm / update_norm, torch.ones_like(param_norm))
                    update = update.mul(trust)
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = update.clone()
                else:
                    buf.mul_(group["momentum"]).add_(update)
                p.add_(buf, alpha=-group["lr"])
        return loss


# Parameters that are embeddings rather than weights: position embeddings and the class / register / mask
# tokens of ViTs (and the MAE decoder's mask token). MAE, DeiT and DINO exempt them from weight decay, which
# would otherwise pull positions and learned tokens towards zero for no benefit.
NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "mask_token")


def param_groups(model: nn.Module, weight_decay: float, exclude_bias_and_norm: bool) -> list[dict]:
    """A decayed group and (with ``exclude_bias_and_norm``) an exempt one: biases and norm parameters (every
    parameter of at most one dimension) and the embeddings named in :data:`NO_DECAY_NAMES`."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim <= 1 or any(key in name.rsplit(".", 1)[-1] for key in NO_DECAY_NAMES)
        (no_decay if exclude_bias_and_norm and exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True})
    return groups


def base_lr(cfg: OptimConfig, global_batch: int) -> float:
    """Linear scaling rule (Goyal et al., 2017): lr is given for a batch of 256."""
    return cfg.lr * global_batch / 256 if cfg.scale_lr else cfg.lr


def _multi_tensor_kernel(optimizer_class, groups: list[dict], cfg: OptimConfig, **hyper) -> torch.optim.Optimizer:
    """``optim.fused``: one fused kernel over all parameters (True), or foreach ops (False); None picks fused
    on CUDA, where it is fastest, and foreach elsewhere. Where torch has no fused kernel for the parameters
    (checked here, since torch itself only fails at the first step), a fused request falls back to foreach."""
    params = [p for g in groups for p in g["params"]]
    on_cuda = bool(params) and all(p.device.type == "cuda" for p in params)
    fused = cfg.fused if cfg.fused is not None else on_cuda
    if fused and not all(p.device.type in ("cuda", "cpu") and p.is_floating_point() for p in params):
        warnings.warn(f"optim.fused: torch has no fused {optimizer_class.__name__} for these parameters; using foreach",
                      stacklevel=3)
        fused = False
    return optimizer_class(groups, **hyper, **({"fused": True} if fused else {"foreach": True}))


def build_optimizer(model: nn.Module, cfg: OptimConfig, global_batch: int) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.exclude_bias_and_norm)
    lr = base_lr(cfg, global_batch)
    if cfg.name == "adamw":
        for g in groups:
            g.pop("lars_exclude", None)
        return _multi_tensor_kernel(torch.optim.AdamW, groups, cfg, lr=lr, betas=tuple(cfg.betas))
    if cfg.name == "sgd":
        for g in groups:
            g.pop("lars_exclude", None)
        return _multi_tensor_kernel(torch.optim.SGD, groups, cfg, lr=lr, momentum=cfg.momentum)
    return LARS(groups, lr=lr, momentum=cfg.momentum)  # a per-parameter loop: optim.fused does not apply


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
