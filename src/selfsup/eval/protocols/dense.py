"""The dense probe: how well a frozen backbone's feature maps, read location by location, tell per-pixel classes.

What detection and segmentation users judge a backbone by (the linear segmentation probe of, e.g., DenseCL and
PixPro's transfer tables, reduced to its linear part): the backbone is frozen; what the head reads
(``features``) is computed once per image of the evaluation transform:

- ``stages`` (default, ConvNets): the hypercolumn (Hariharan, Arbelaez, Girshick, Malik, "Hypercolumns for Object
  Segmentation and Fine-grained Localization", CVPR 2015): the map at the end of every stage
  (:func:`selfsup.backbones.feature_maps.stage_features`), each bilinearly upsampled to the label resolution and
  concatenated along channels. A ConvNet's last map is coarse (stride 8 on small_resnet: 6 x 6 cells on a 48 px
  image), so a linear head on it alone scores mostly how well bilinear upsampling outlines objects, the same for
  every backbone; with the hypercolumn the shallow stages place the boundaries and the deep ones must say which
  class, which is where pretrained features differ.
- ``last``: the last feature map before pooling (:func:`selfsup.backbones.feature_maps.feature_map`). Backbones
  without stages (ViTs: their patch tokens on the patch grid) always read this.

A 1x1 convolution (a linear classifier per location, on features standardised with the training set's
per-channel mean and std) gives class logits at the label resolution (the evaluation transform's
``image_size``). It is computed as one 1x1 head per map whose logits are upsampled and summed, which is the same
linear function as a 1x1 head on the upsampled concatenation (bilinear upsampling is linear and commutes with a
per-location linear map) without holding full-resolution copies of the deep maps. It is trained by Adam on
per-pixel cross entropy over the training images (pixels labelled 255 are ignored). Scores on the test split:
``dense_miou`` (the mean over classes present in the labels or predictions of TP / (TP + FP + FN)) and
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
from typing import Literal

from pydantic import Field, PositiveInt

from selfsup.backbones.feature_maps import feature_map, has_feature_map, has_stages, stage_features
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
    features: Literal["stages", "last"] = "stages"  # the hypercolumn of every stage, or the last map (module doc)


def label_masks(source, count: int, image_size: int) -> torch.Tensor:
    """(count, image_size, image_size) long labels of the first ``count`` images, transformed as the evaluation
    transform transforms images (shorter side resized, nearest; centre crop); without masks, each image's class."""
    if not has_masks(source):
        labels = torch.as_tensor(np.asarray(source.labels[:count])).long()
        return labels[:, None, None].expand(-1, image_size, image_size).clone()
    masks = torch.from_numpy(np.asarray(source.masks[:count]).astype(np.int64))[:, None]
    masks = TF.resize(masks, [image_size], interpolation=TF.InterpolationMode.NEAREST)
    return TF.center_crop(masks, [image_size, image_size])[:, 0]


def probe_maps(backbone: nn.Module, images: torch.Tensor, features: str = "stages") -> list[torch.Tensor]:
    """The maps the probe reads (module doc): every stage's map where ``features`` is ``stages`` and the backbone
    has stages, else the last feature map alone."""
    if features == "stages" and has_stages(backbone):
        return stage_features(backbone, images)
    return [feature_map(backbone, images)]


@torch.no_grad()
def dense_features(backbone: nn.Module | None, source, count: int, preprocess: Preprocess, device,
                   batch_size: int = 128, features: str = "stages") -> list[torch.Tensor]:
    """The frozen maps [(count, C_k, h_k, w_k) float32 CPU] of :func:`probe_maps` (or, for None, [the normalised
    pixels])."""
    chunks = []
    for start in range(0, count, batch_size):
        images = torch.stack([preprocess(source.get_image(i)) for i in range(start, min(start + batch_size, count))])
        chunks.append([images] if backbone is None else
                      [m.float().cpu() for m in probe_maps(backbone, images.to(device), features)])
    return [torch.cat(maps) for maps in zip(*chunks)]


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


class HypercolumnHead(nn.Module):
    """A 1x1 linear head on the channel concatenation of standardised maps upsampled to ``size``, computed as one
    1x1 convolution per map whose logits are upsampled and summed (the same linear function; module doc)."""

    def __init__(self, maps: list[torch.Tensor], num_classes: int, size: int):
        super().__init__()
        self.size = size
        self.convs = nn.ModuleList(nn.Conv2d(m.shape[1], num_classes, 1, bias=i == 0) for i, m in enumerate(maps))
        for i, m in enumerate(maps):
            self.register_buffer(f"mean{i}", m.mean(dim=(0, 2, 3), keepdim=True))
            self.register_buffer(f"std{i}", m.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6))

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        total = 0
        for i, (conv, x) in enumerate(zip(self.convs, maps)):
            logits = conv((x - getattr(self, f"mean{i}")) / getattr(self, f"std{i}"))
            if logits.shape[-1] != self.size:
                logits = F.interpolate(logits, size=(self.size, self.size), mode="bilinear", align_corners=False)
            total = total + logits
        return total


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
    train = dense_features(encoder, splits.train, n_train, preprocess, device, features=settings.features)
    test = dense_features(encoder, splits.test, len(splits.test), preprocess, device, features=settings.features)
    train_y, test_y = label_masks(splits.train, n_train, size), label_masks(splits.test, len(splits.test), size)
    labelled = torch.cat([train_y[train_y != IGNORE], test_y[test_y != IGNORE]])
    num_classes = int(labelled.max()) + 1
    with seeded_rng(seed, device):
        head = HypercolumnHead(train, num_classes, size).to(device)
        order_gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    for _ in range(settings.epochs):
        for batch in torch.randperm(n_train, generator=order_gen).split(settings.batch_size):
            logits = head([m[batch].to(device) for m in train])
            loss = F.cross_entropy(logits, train_y[batch].to(device), ignore_index=IGNORE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    with torch.no_grad():
        for batch in torch.arange(len(test_y)).split(256):
            pred = head([m[batch].to(device) for m in test]).argmax(1).cpu()
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
    description = ("a 1x1 linear head on the frozen backbone's hypercolumn (every stage's map upsampled to the label "
                   "resolution; a ViT's patch tokens) trained on per-pixel labels; mean IoU and pixel accuracy on "
                   "the test split")
    about = {"head": "1x1 convolution on standardised frozen feature maps (every stage: the hypercolumn), bilinear "
                     "upsampling",
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
