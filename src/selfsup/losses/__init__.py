"""Pure loss functions, grouped by family; each declares its distributed semantics."""
from selfsup.losses.clustering import sinkhorn_knopp, swav_loss
from selfsup.losses.contrastive import info_nce, mochi_negatives, nt_xent, supcon
from selfsup.losses.distillation import dino_loss, negative_cosine, update_center
from selfsup.losses.redundancy import barlow_twins, mixed_barlow_regularizer, vicreg

__all__ = [
    "barlow_twins",
    "dino_loss",
    "info_nce",
    "mixed_barlow_regularizer",
    "mochi_negatives",
    "negative_cosine",
    "nt_xent",
    "sinkhorn_knopp",
    "supcon",
    "swav_loss",
    "update_center",
    "vicreg",
]
