"""Fine-tuning: every layer plus a linear head, AdamW, layer-wise lr decay for ViTs, optional mixup / CutMix
(:mod:`selfsup.eval.finetune`). Raw pixels have no layers to tune: the raw-pixel row goes without it."""
from __future__ import annotations

from selfsup.eval.finetune import FinetuneSettings, finetune
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import ImageProtocol


@PROTOCOLS.register("finetune")
class Finetune(ImageProtocol):
    settings = FinetuneSettings
    train = finetune
    family = ("finetune_",)
    order = 40
    # The decay actually applied (1.0 for a backbone that is not a ViT): a setting, not a score.
    not_scores = frozenset({"finetune_layer_decay"})
    raw_pixels = False
    test_settings = {"epochs": 1, "batch_size": 8}
    title = "fine-tuning"
    description = ("every layer of a copy of the backbone plus a new linear head, trained with AdamW (warm-up, "
                   "cosine) on cropped and flipped images, MAE's layer-wise learning-rate decay for ViTs")
    about = {"optimizer": "AdamW, linear warm-up + cosine",
             "layer_decay_scope": "ViT backbones (others: one learning rate)",
             "augmentation": "random resized crop + horizontal flip"}
