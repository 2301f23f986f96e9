"""Tiny methods for the tests parametrized over the method registry: each built from its own ``test_options`` on
a tiny backbone, and batches of its views as the training loader would collate them."""
from __future__ import annotations

import torch

from selfsup.backbones import build_backbone
from selfsup.methods import METHODS, build_method
from selfsup.views.dataset import ViewCollate, ViewDataset
from selfsup.views.preprocess import Preprocess
from kind_utils import tiny_kind_backbone, tiny_kind_source

SIZE = 16  # pixels: a 4 x 4 grid of 4-px patches for the ViT methods


def build_tiny_method(name: str, size: int = SIZE):
    torch.manual_seed(0)
    if METHODS[name].field_kind != "image":  # tables, point clouds, graphs: that kind's tiny encoder
        return build_method(name, tiny_kind_backbone(METHODS[name].field_kind), METHODS[name].test_options)
    if METHODS[name].needs_vit:  # token-level access (masks, token dropping): a tiny ViT, 4 x 4 patches of 4 px
        backbone = build_backbone("vit_micro_cpu", 3, img_size=size, embed_dim=32, depth=2, num_heads=2)
    else:
        backbone = build_backbone("small_resnet", 3, widths=[8, 8, 16, 16], stem_stride=1)
    return build_method(name, backbone, METHODS[name].test_options)


def captions_for(n: int) -> list[list[str]]:
    """Two distinct captions per image, for the image-text methods (the others never read them)."""
    return [[f"picture number {i} of class {i % 4}", f"image {i}"] for i in range(n)]


def view_batch(method, source, batch: int, epoch: int = 0, size: int = SIZE) -> dict:
    """The first ``batch`` samples of ``source`` as ``method``'s views, collated as the loader does."""
    if method.field_kind != "image":  # a method of another kind trains on that kind's tiny data
        source = tiny_kind_source(method.field_kind)
    dataset = ViewDataset(source, method.views, size, seed=0)
    collate = ViewCollate(Preprocess(size, [0.5] * 3, [0.25] * 3))
    return collate([dataset[(epoch, i)] for i in range(batch)])
