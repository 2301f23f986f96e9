"""Optimizers (AdamW, SGD, LARS) and their parameter groups (weight decay, the backbone per layer)."""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from selfsup.backbones.layers import backbone_layers
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


def param_groups(model: nn.Module, weight_decay: float, exclude_bias_and_norm: bool,
                 backbone: nn.Module | None = None, layer_decay: float = 1.0) -> list[dict]:
    """A decayed group and (with ``exclude_bias_and_norm``) an exempt one: biases and norm parameters (every
    parameter of at most one dimension) and the embeddings named in :data:`NO_DECAY_NAMES`.

    With ``backbone`` (the method's exported module, inside ``model``) its parameters get groups of their own,
    marked ``backbone=True`` (so that a first phase can hold them still), one per layer of
    :func:`~selfsup.backbones.layers.backbone_layers` with ``lr_scale = layer_decay ** (top - layer)``; the
    other parameters (heads, predictors, prototypes) keep ``lr_scale`` 1."""
    layer_of, top = backbone_layers(backbone) if backbone is not None else ({}, 0)
    in_backbone = {id(p): layer_of[n] for n, p in backbone.named_parameters()} if backbone is not None else {}
    groups: dict[tuple, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = exclude_bias_and_norm and (param.ndim <= 1 or any(key in name.rsplit(".", 1)[-1]
                                                                   for key in NO_DECAY_NAMES))
        layer = in_backbone.get(id(param))
        key = (layer is None, -1 if layer is None else layer, exempt)  # heads first, as before the split
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"params": [], "weight_decay": 0.0 if exempt else weight_decay}
            if exempt:
                group["lars_exclude"] = True
            if backbone is not None:
                group.update(backbone=layer is not None,
                             lr_scale=1.0 if layer is None else layer_decay ** (top - layer))
        group["params"].append(param)
    if backbone is None:  # the decayed group always exists, as it always did
        groups.setdefault((True, -1, False), {"params": [], "weight_decay": weight_decay})
    return [groups[key] for key in sorted(groups, key=lambda k: (not k[0], k[1], k[2]))]


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


def build_optimizer(model: nn.Module, cfg: OptimConfig, global_batch: int, backbone: nn.Module | None = None,
                    split_backbone: bool = False) -> torch.optim.Optimizer:
    """The optimizer of ``model``'s trainable parameters; the backbone's are grouped apart (per layer) when
    ``split_backbone`` (a frozen first phase) or ``optim.layer_decay`` < 1 asks for it."""
    split = backbone is not None and (split_backbone or cfg.layer_decay < 1)
    groups = param_groups(model, cfg.weight_decay, cfg.exclude_bias_and_norm,
                          backbone=backbone if split else None, layer_decay=cfg.layer_decay)
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


def set_lr(optimizer: torch.optim.Optimizer, lr: float, backbone_factor: float = 1.0) -> None:
    """Every group at ``lr`` times its ``lr_scale`` (layer decay), the backbone's groups also times
    ``backbone_factor`` (0 while the backbone is held still)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0) * (backbone_factor if group.get("backbone") else 1.0)
