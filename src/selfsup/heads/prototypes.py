"""Learnable prototypes on the unit sphere (SwAV: Caron et al., "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", NeurIPS 2020, section 3.1): the scores of an embedding are its cosine
similarities to K prototype vectors."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Prototypes(nn.Module):
    def __init__(self, dim: int, num_prototypes: int):
        super().__init__()
        self.weight = nn.Parameter(F.normalize(torch.randn(num_prototypes, dim), dim=1))

    @torch.no_grad()
    def normalize_(self) -> None:
        """Project the prototypes back onto the unit sphere (SwAV does this before every step)."""
        self.weight.copy_(F.normalize(self.weight, dim=1))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(embeddings, dim=-1) @ self.weight.T
