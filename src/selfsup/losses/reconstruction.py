"""Reconstruction losses of masked image modelling.

Distributed semantics: both losses are means over this rank's masked elements and involve no other sample.
The mask strategies draw a fixed number of masked patches per sample (see :mod:`selfsup.views.masks`), so
every rank averages over the same number of elements and the mean of the per-rank losses (which DDP takes
of the gradients) equals the loss of one process on the global batch. Nothing is gathered.
"""
from __future__ import annotations

import torch


def masked_patch_mse(pred: torch.Tensor, target_patches: torch.Tensor, mask: torch.Tensor,
                     normalize_target: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """MAE's loss (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, section 3):
    mean squared error between predicted and true pixels, on the masked patches only.

    ``pred`` and ``target_patches`` are (B, N, D) (D = p * p * C, see :func:`selfsup.backbones.vit.patchify`),
    ``mask`` (B, N) bool or 0/1, true where the patch was hidden from the encoder. With ``normalize_target``
    each target patch is normalized by its own mean and (unbiased) variance, ``(t - mean) / sqrt(var + eps)``
    (the paper's "normalized pixels" variant, which improves the representation): the decoder then predicts
    local contrast instead of absolute brightness. The per-patch error is the mean over D; the loss is the
    mean of that over the masked patches. Computed in float32 whatever the input dtype.
    """
    if pred.shape != target_patches.shape or pred.ndim != 3 or mask.shape != pred.shape[:2]:
        raise ValueError(f"masked_patch_mse expects pred and target (B, N, D) and mask (B, N), got "
                         f"{tuple(pred.shape)}, {tuple(target_patches.shape)} and {tuple(mask.shape)}")
    target = target_patches.detach().float()
    if normalize_target:
        if target.shape[-1] < 2:
            raise ValueError("normalize_target needs patches of at least 2 values (a variance)")
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)  # unbiased, as in the paper's code
        target = (target - mean) / (var + eps).sqrt()
    per_patch = (pred.float() - target).pow(2).mean(dim=-1)  # (B, N)
    weight = mask.float()
    # clamp: a batch without masked patches gives 0 (and zero gradients), not NaN
    return (per_patch * weight).sum() / weight.sum().clamp(min=1.0)


def masked_pixel_l1(pred: torch.Tensor, target: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """SimMIM's loss (Xie et al., "SimMIM: A Simple Framework for Masked Image Modeling", CVPR 2022, eq. 1):
    mean absolute error on the masked pixels, of every channel.

    ``pred`` and ``target`` (B, C, H, W) are in the (normalized) input space; ``pixel_mask`` (B, 1, H, W)
    (or (B, H, W)) is true on hidden pixels. The sum of |pred - target| over masked pixels and channels is
    divided by (number of masked pixels x C). Computed in float32 whatever the input dtype.
    """
    if pixel_mask.ndim == 3:
        pixel_mask = pixel_mask.unsqueeze(1)
    if pred.shape != target.shape or pred.ndim != 4 or pixel_mask.shape != (pred.shape[0], 1, *pred.shape[2:]):
        raise ValueError(f"masked_pixel_l1 expects pred and target (B, C, H, W) and a mask (B, 1, H, W), got "
                         f"{tuple(pred.shape)}, {tuple(target.shape)} and {tuple(pixel_mask.shape)}")
    weight = pixel_mask.float()
    error = (pred.float() - target.detach().float()).abs() * weight
    return error.sum() / (weight.sum() * pred.shape[1]).clamp(min=1.0)
