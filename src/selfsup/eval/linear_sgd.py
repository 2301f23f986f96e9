"""The full linear protocol: a linear classifier trained by SGD on augmented images through a frozen backbone.

Unlike the ``linear`` protocol (logistic regression on cached features of the un-augmented images,
:mod:`selfsup.eval.linear`), this is the linear evaluation of the SimCLR / MoCo / MAE papers, shortened to
CPU budgets:

1. The backbone is frozen: a copy in eval mode (BatchNorm statistics fixed), run without gradients.
2. Every epoch the training images get a fresh random resized crop (scale 0.5 to 1) and horizontal flip, so
   their features are recomputed each epoch (nothing can be cached).
3. The classifier is a BatchNorm without affine parameters followed by a linear layer, as in MAE's linear
   probing (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, appendix A.2): the
   normalisation makes one learning rate work for features of any scale, and at test time it is a fixed
   affine map, so the classifier stays linear. The linear layer starts at N(0, 0.01), zero bias.
4. SGD with momentum 0.9, no weight decay, cosine learning-rate decay per step; cross-entropy.
5. Top-1 on the test split under the evaluation transform (no augmentation), after the last epoch.

With no backbone (``backbone=None``) the features are the normalised pixels themselves: the raw-pixel
baseline of this protocol. Everything random follows from ``seed``.
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, PositiveInt, field_validator

from selfsup.config import SettingsModel
from selfsup.eval.finetune import check_crop_scale, resolve_device, seeded_rng, supervised_epochs, top1_accuracy
from selfsup.schedules import warmup_cosine
from selfsup.views.preprocess import Preprocess

__all__ = ["LinearSGDSettings", "linear_sgd"]


class LinearSGDSettings(SettingsModel):
    """Every choice of the full linear protocol (``eval.linear_sgd.*``); defaults sized for 6,000 images of 32 px
    on 2 CPU cores."""

    epochs: PositiveInt = 4
    lr: float = Field(0.1, gt=0)  # SGD peak learning rate, for batch_size (no scaling rule applied)
    batch_size: int = Field(256, ge=2)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    crop_scale: tuple[float, float] = (0.5, 1.0)

    check_crop_scale = field_validator("crop_scale")(check_crop_scale)


def linear_sgd(backbone: nn.Module | None, splits, *, preprocess: Preprocess,
               settings: LinearSGDSettings | None = None, seed: int = 0, device=None,
               log: Callable[[str], None] | None = None) -> dict:
    """Train BatchNorm + linear on frozen features of augmented ``splits.train`` images; test top-1.

    ``backbone=None``: on the flattened normalised pixels. ``device``: default where the backbone is.
    Returns ``{"linear_sgd_top1": accuracy}`` (NaN when the loss diverged: lower ``eval.linear_sgd.lr``).
    """
    settings = settings or LinearSGDSettings()
    device = resolve_device(backbone, device)
    labels = torch.as_tensor(np.asarray(splits.train.labels), dtype=torch.int64)
    num_classes = int(labels.max()) + 1
    if backbone is None:
        encoder, dims = nn.Flatten(), preprocess.channels * preprocess.image_size ** 2
    else:
        encoder, dims = copy.deepcopy(backbone).to(device).eval().requires_grad_(False), int(backbone.num_features)
    with seeded_rng(seed, device):
        linear = nn.Linear(dims, num_classes)
        nn.init.trunc_normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
        head = nn.Sequential(nn.BatchNorm1d(dims, affine=False), linear).to(device).train()
        optimizer = torch.optim.SGD(head.parameters(), lr=settings.lr, momentum=settings.momentum,
                                    weight_decay=settings.weight_decay)

        def loss_of(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                features = encoder(images.to(device)).float()
            return F.cross_entropy(head(features), labels.to(device))

        if not supervised_epochs("linear_sgd", splits.train, optimizer=optimizer, loss_of=loss_of,
                                 lr_at=lambda progress: settings.lr * warmup_cosine(progress, 0.0, 0.0),
                                 epochs=settings.epochs, batch_size=settings.batch_size, preprocess=preprocess,
                                 crop_scale=settings.crop_scale, seed=seed, log=log):
            return {"linear_sgd_top1": float("nan")}
        head.eval()
        top1 = top1_accuracy(lambda images: head(encoder(images).float()), splits.test, preprocess=preprocess,
                             device=device)
    return {"linear_sgd_top1": top1}
