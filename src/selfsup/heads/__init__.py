"""Heads: projector / predictor MLPs, the DINO head, SwAV prototypes, the JEPA predictor,
the MAE decoder."""
from selfsup.heads.dino import DINOHead
from selfsup.heads.jepa_predictor import JEPAPredictor
from selfsup.heads.mae_decoder import MAEDecoder
from selfsup.heads.mlp import mlp
from selfsup.heads.prototypes import Prototypes

__all__ = ["DINOHead", "JEPAPredictor", "MAEDecoder", "Prototypes", "mlp"]
