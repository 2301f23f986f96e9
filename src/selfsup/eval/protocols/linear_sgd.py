"""The full linear protocol: BatchNorm + linear layer trained by SGD on augmented images through the frozen
backbone, also on raw pixels (:mod:`selfsup.eval.linear_sgd`)."""
from __future__ import annotations

from selfsup.eval.linear_sgd import LinearSGDSettings, linear_sgd
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import ImageProtocol


@PROTOCOLS.register("linear_sgd")
class LinearSGD(ImageProtocol):
    settings = LinearSGDSettings
    train = linear_sgd
    family = ("linear_sgd_",)
    order = 30
    test_settings = {"epochs": 1, "batch_size": 8}
    title = "linear (SGD, augmented)"
    description = ("the linear evaluation of the papers: a non-affine BatchNorm and a linear layer trained by SGD "
                   "(cosine schedule) on randomly cropped and flipped images through the frozen backbone")
    about = {"optimizer": "SGD, cosine schedule", "classifier": "BatchNorm (no affine) + linear on frozen features",
             "augmentation": "random resized crop + horizontal flip"}
