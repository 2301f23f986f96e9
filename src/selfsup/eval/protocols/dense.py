"""The dense probe: how well a frozen backbone's feature map, read location by location, tells per-pixel classes.

What detection and segmentation users judge a backbone by (the linear segmentation probe of, e.g., DenseCL and
PixPro's transfer tables, reduced to its linear part): the backbone is frozen; its last feature map before
pooling (:func:`selfsup.backbones.feature_maps.feature_map`: a ConvNet's last stage, a ViT's patch tokens on
their grid) is computed once per image of the evaluation transform; a 1x1 convolution (a linear classifier per
location, on features standardised with the training set's per-channel mean and std) gives class logits that are
bilinearly upsampled to the label resolution (the evaluation transform's ``image_size``), and it is trained by
Adam on per-pixel cross entropy over the training images (pixels labelled 255 are ignored). Scores on the test
split: ``dense_miou`` (the mean over classes present in the labels or predictions of TP / (TP + FP + FN)) and
``dense_pixel_acc``. The raw-pixel row is the same head on the normalised pixels at full resolution (it can
tell ink from background, not which digit).

Per-pixel labels: a source's ``masks`` (:mod:`selfsup.data.dense`: the embedded ``digits-dense``, or a folder of
images plus a folder of masks). Data without them still runs when named explicitly, each image's class painted
over the whole image (the probe then measures how much class evidence every location carries); the protocol
runs by default only where the data has masks (:func:`with_dense_when_masked`).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from pydantic import Field, PositiveInt

from selfsup.backbones.feature_maps import feature_map, has_feature_map
from selfsup.data.dense import IGNORE, has_masks
from selfsup.eval.finetune import resolve_device, seeded_rng
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import ImageProtocol, Settings
from selfsup.views.preprocess import Preprocess


class DenseSettings(Settings):
    epochs: PositiveInt = 10
    lr: float = Field(0.01, gt=0)
    batch_size: PositiveInt = 64  # images per step of the head
    weight_decay: float = Field(0.0, ge=0)
    max_train_images: PositiveInt | None = 2000  # the head's training set is capped (feature maps are kept in memory)


def label_masks(source, count: int, image_size: int) -> torch.Tensor:
    """(count, image_size, image_size) long labels of the first ``count`` images, transformed as the evaluation
    transform transforms images (shorter side resized, nearest; centre crop); without masks, each image's class."""
    if not has_masks(source):
        labels = torch.as_tensor(np.asarray(source.labels[:count])).long()
        return labels[:, None, None].expand(-1, image_size, image_size).clone()
    masks = torch.from_numpy(np.asarray(source.masks[:count]).astype(np.int64))[:, None]
    masks = TF.resize(masks, [image_size], interpolation=TF.InterpolationMode.NEAREST)
    return TF.center_crop(masks, [image_size, image_size])[:, 0]


@torch.no_grad()
def dense_features(backbone: nn.Module | None, source, count: int, preprocess: Preprocess, device,
                   batch_size: int = 128) -> torch.Tensor:
    """(count, C, h, w) float32 CPU: the frozen feature maps (or, for None, the normalised pixels)."""
    chunks = []
    for start in range(0, count, batch_size):
        images = torch.stack([preprocess(source.get_image(i)) for i in range(start, min(start + batch_size, count))])
        chunks.append(images if backbone is None else feature_map(backbone, images.to(device)).float().cpu())
    return torch.cat(chunks)


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    keep = target != IGNORE
    index = target[keep] * num_classes + pred[keep]
    return torch.bincount(index, minlength=num_classes ** 2).view(num_classes, num_classes)


def segmentation_scores(matrix: torch.Tensor) -> dict:
    """mIoU (over classes present in labels or predictions) and pixel accuracy from a confusion matrix
    (rows: labels, columns: predictions)."""
    matrix = matrix.double()
    tp = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - tp
    present = union > 0
    iou = tp[present] / union[present]
    return {"dense_miou": float(iou.mean()) if len(iou) else 0.0,
            "dense_pixel_acc": float(tp.sum() / matrix.sum().clamp_min(1))}


def _logits(head: nn.Module, features: torch.Tensor, mean, std, size: int) -> torch.Tensor:
    logits = head((features - mean) / std)
    if logits.shape[-1] != size:
        logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    return logits


def dense_probe(backbone: nn.Module | None, splits, *, preprocess: Preprocess, settings: DenseSettings | None = None,
                seed: int = 0, device=None, log=None) -> dict:
    """Train a 1x1 linear head on the frozen feature maps of ``splits.train`` and score it on ``splits.test``."""
    settings = settings or DenseSettings()
    if backbone is not None and not has_feature_map(backbone):
        raise ValueError(f"the dense probe reads a feature map; {type(backbone).__name__} gives only pooled features "
                         "(use a ConvNet with forward_features or a ViT, or drop 'dense' from eval.protocols)")
    device = resolve_device(backbone, device)
    encoder = None if backbone is None else copy.deepcopy(backbone).to(device).eval()
    size = preprocess.image_size
    n_train = min(len(splits.train), settings.max_train_images or len(splits.train))
    train = dense_features(encoder, splits.train, n_train, preprocess, device)
    test = dense_features(encoder, splits.test, len(splits.test), preprocess, device)
    train_y, test_y = label_masks(splits.train, n_train, size), label_masks(splits.test, len(splits.test), size)
    labelled = torch.cat([train_y[train_y != IGNORE], test_y[test_y != IGNORE]])
    num_classes = int(labelled.max()) + 1
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    with seeded_rng(seed, device):
        head = nn.Conv2d(train.shape[1], num_classes, 1).to(device)
        order_gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    mean, std = mean.to(device), std.to(device)
    for _ in range(settings.epochs):
        for batch in torch.randperm(n_train, generator=order_gen).split(settings.batch_size):
            logits = _logits(head, train[batch].to(device), mean, std, size)
            loss = F.cross_entropy(logits, train_y[batch].to(device), ignore_index=IGNORE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    with torch.no_grad():
        for batch in torch.arange(len(test)).split(256):
            pred = _logits(head, test[batch].to(device), mean, std, size).argmax(1).cpu()
            matrix += confusion(pred, test_y[batch], num_classes)
    return segmentation_scores(matrix)


@PROTOCOLS.register("dense")
class Dense(ImageProtocol):
    settings = DenseSettings
    train = dense_probe
    family = ("dense_",)
    order = 33  # after the linear protocols that train on images, before fine-tuning
    test_settings = {"epochs": 2, "batch_size": 8}
    title = "dense probe (1x1 linear head, mIoU)"
    description = ("a 1x1 linear head on the frozen backbone's feature map, upsampled to the label resolution and "
                   "trained on per-pixel labels; mean IoU and pixel accuracy on the test split")
    about = {"head": "1x1 convolution on standardised frozen feature maps, bilinear upsampling",
             "optimizer": "Adam, per-pixel cross entropy", "labels": "the data's masks, else the image's class"}


def with_dense_when_masked(settings, splits, log=None):
    """``settings`` (a ProtocolSettings) plus the dense probe when the data carries per-pixel labels and it was not
    asked for: what a run on segmentation data is judged by."""
    if "dense" in settings.protocols or not (has_masks(splits.train) and splits.test is not None
                                             and has_masks(splits.test)):
        return settings
    if log is not None:
        log("the data has per-pixel labels: evaluating the dense probe too")
    return type(settings)(protocols=(*settings.protocols, "dense"), seed=settings.seed, options=settings.options)
