"""Heads: projector / predictor MLPs, prototypes, decoders."""
from selfsup.heads.mlp import mlp

__all__ = ["mlp"]
