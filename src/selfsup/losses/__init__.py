"""Pure loss functions, grouped by family; each declares its distributed semantics."""
from selfsup.losses.contrastive import nt_xent

__all__ = ["nt_xent"]
