"""Heads: projector / predictor MLPs, the DINO head, SwAV prototypes."""
from selfsup.heads.dino import DINOHead
from selfsup.heads.mlp import mlp
from selfsup.heads.prototypes import Prototypes

__all__ = ["DINOHead", "Prototypes", "mlp"]
