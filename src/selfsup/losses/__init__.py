"""Pure loss functions, grouped by family; each declares its distributed semantics."""
from selfsup.losses.clustering import sinkhorn_knopp, swav_loss
from selfsup.losses.coding_rate import emp_ssl_loss, patch_invariance, total_coding_rate
from selfsup.losses.contrastive import dense_info_nce, info_nce, mochi_negatives, nt_xent, supcon
from selfsup.losses.distillation import (dino_loss, feature_distillation, masked_patch_distillation, negative_cosine,
                                        similarity_distillation, soft_target_distillation, update_center)
from selfsup.losses.image_text import clip_loss, convirt_loss, siglip_loss
from selfsup.losses.predictive import latent_prediction_loss, standardise_over_batch, view_prediction_loss
from selfsup.losses.reconstruction import masked_patch_mse, masked_pixel_l1
from selfsup.losses.redundancy import barlow_twins, mixed_barlow_regularizer, vicreg
from selfsup.losses.sigreg import epps_pulley, sigreg, sigreg_directions

__all__ = [
    "barlow_twins",
    "clip_loss",
    "convirt_loss",
    "dense_info_nce",
    "dino_loss",
    "emp_ssl_loss",
    "epps_pulley",
    "feature_distillation",
    "info_nce",
    "latent_prediction_loss",
    "masked_patch_distillation",
    "masked_patch_mse",
    "masked_pixel_l1",
    "mixed_barlow_regularizer",
    "mochi_negatives",
    "negative_cosine",
    "nt_xent",
    "patch_invariance",
    "siglip_loss",
    "similarity_distillation",
    "sigreg",
    "sigreg_directions",
    "standardise_over_batch",
    "sinkhorn_knopp",
    "soft_target_distillation",
    "supcon",
    "swav_loss",
    "total_coding_rate",
    "update_center",
    "vicreg",
    "view_prediction_loss",
]
