"""Bag of patches: kNN and the linear probe on the mean of the backbone's features over a fixed grid of patches.

Methods trained on small fixed-size patches (EMP-SSL, Tong et al., arXiv:2304.03977, 2023) are evaluated in
their papers on a "bag of features" (Chen, LeCun et al., "Intra-Instance VICReg: Bag of Self-Supervised Image
Patch Embedding", 2022): an image's representation is the mean of its patches' embeddings. Here the patches
are deterministic: every image goes through the evaluation transform (``image_size`` pixels), then a
``grid`` x ``grid`` grid of square patches covering ``patch_scale`` of the area each, evenly spaced from corner to
corner, is cut out, resized to ``patch_size`` (default: kept at its own side), and the backbone's pooled
features of the patches are averaged. The kNN (cosine, temperature-weighted votes) and the linear probe
(logistic regression, L2 chosen on a validation split of the training labels) are those of the ``knn`` and
``linear`` protocols, on these features. (The EMP-SSL paper averages the projector's first hidden layer over
128 random augmented patches; only the backbone is exported, so this protocol averages its features.)
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, PositiveInt

from selfsup.eval.finetune import resolve_device
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.linear import linear_probe
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import ImageProtocol, Settings
from selfsup.views.preprocess import Preprocess


class BagOfPatchesSettings(Settings):
    grid: PositiveInt = 3  # patches per side: grid x grid patches per image
    patch_scale: float = Field(0.25, gt=0, le=1)  # area fraction of each square patch (EMP-SSL's 0.25)
    patch_size: PositiveInt | None = None  # pixels each patch is resized to; None: its own side
    k: list[PositiveInt] = Field(default_factory=lambda: [20, 200])
    temperature: float = Field(0.07, gt=0)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    batch_size: PositiveInt = 256  # images per backbone call (times grid^2 patches)


def grid_boxes(image_size: int, patch_scale: float, grid: int) -> list[tuple[int, int, int]]:
    """(top, left, side) of the ``grid`` x ``grid`` square patches of ``patch_scale`` of the area of an
    ``image_size`` square, evenly spaced from corner to corner (one centred patch for ``grid=1``)."""
    side = min(image_size, max(1, round(math.sqrt(patch_scale) * image_size)))
    room = image_size - side
    offsets = [room // 2] if grid == 1 else [round(i * room / (grid - 1)) for i in range(grid)]
    return [(top, left, side) for top in offsets for left in offsets]


def patch_grid(images: torch.Tensor, boxes, patch_size: int | None) -> torch.Tensor:
    """(B, C, S, S) -> (P, B, C, p, p): the patches at ``boxes`` (:func:`grid_boxes`), resized to ``patch_size``."""
    patches = torch.stack([images[:, :, top:top + side, left:left + side] for top, left, side in boxes])
    side = boxes[0][2]
    if patch_size is None or patch_size == side:
        return patches
    p, b = patches.shape[:2]
    resized = F.interpolate(patches.flatten(0, 1), size=(patch_size, patch_size), mode="bilinear",
                            align_corners=False, antialias=True)
    return resized.view(p, b, *resized.shape[1:])


@torch.no_grad()
def bag_of_patch_features(backbone: nn.Module, source, *, preprocess: Preprocess, settings: BagOfPatchesSettings,
                          device) -> torch.Tensor:
    """(N, D) float32 CPU: for every image of ``source``, the mean of ``backbone``'s features over its grid."""
    boxes = grid_boxes(preprocess.image_size, settings.patch_scale, settings.grid)
    chunks = []
    for start in range(0, len(source), settings.batch_size):
        indices = range(start, min(start + settings.batch_size, len(source)))
        images = torch.stack([preprocess(source.get_image(i)) for i in indices]).to(device)
        patches = patch_grid(images, boxes, settings.patch_size)
        features = backbone(patches.flatten(0, 1)).float()
        chunks.append(features.view(len(boxes), len(indices), -1).mean(dim=0).cpu())
    return torch.cat(chunks)


def bag_of_patches(backbone: nn.Module, splits, *, preprocess: Preprocess, settings: BagOfPatchesSettings | None = None,
                   seed: int = 0, device=None, log=None) -> dict:
    """kNN and linear-probe top-1 of the bag-of-patches features of ``splits`` (train: bank, test: queries)."""
    settings = settings or BagOfPatchesSettings()
    device = resolve_device(backbone, device)
    encoder = copy.deepcopy(backbone).to(device).eval()
    train, test = (bag_of_patch_features(encoder, split, preprocess=preprocess, settings=settings, device=device)
                   for split in (splits.train, splits.test))
    train_labels, test_labels = (torch.as_tensor(split.labels).long() for split in (splits.train, splits.test))
    accuracy = knn_accuracy(train, train_labels, test, test_labels, ks=settings.k, temperature=settings.temperature)
    probe = linear_probe(train, train_labels, test, test_labels, val_fraction=settings.val_fraction, seed=seed)
    return {**{f"bag_knn_top1@{k}": acc for k, acc in accuracy.items()},
            "bag_linear_top1": probe["top1"], "bag_linear_weight_decay": probe["weight_decay"]}


@PROTOCOLS.register("bag_of_patches")
class BagOfPatches(ImageProtocol):
    settings = BagOfPatchesSettings
    train = bag_of_patches
    family = ("bag_knn_top1@", "bag_linear_")
    order = 27  # after the feature protocols on whole images, before the protocols that train on images
    scope_keys = frozenset({"k"})
    not_scores = frozenset({"bag_linear_weight_decay"})
    raw_pixels = False  # the mean of pixel patches is a blurred image, not a baseline of its own
    test_settings = {"grid": 2, "batch_size": 16}
    title = "bag of patches (kNN, linear)"
    description = ("kNN and the linear probe on the mean of the backbone's features over a fixed grid of square "
                   "patches of each image (the bag-of-features evaluation of patch-based methods such as EMP-SSL)")
    about = {"similarity": "cosine", "patches": "fixed grid, evenly spaced from corner to corner"}
