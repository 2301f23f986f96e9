"""The collapse monitor: per-dimension spread and effective rank of a method's embeddings during training.

The two measures are also part of the after-training diagnostics (:mod:`selfsup.eval.diagnostics` imports
them from here: evaluation sits above the engine).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def normalized_std(embeddings: torch.Tensor) -> float:
    """Mean per-dimension std of L2-normalised embeddings, times sqrt(D).

    About 1 for embeddings spread over the sphere, 0 for complete collapse (SimSiam, Chen & He 2021, sec. 4.1).
    """
    z = F.normalize(embeddings.float(), dim=1)
    return float(z.std(dim=0).mean() * z.shape[1] ** 0.5)


@torch.no_grad()
def effective_rank(embeddings: torch.Tensor) -> float:
    """RankMe (Garrido et al., ICML 2023): exp of the entropy of the normalised singular values."""
    s = torch.linalg.svdvals(embeddings.float())
    p = s / s.sum().clamp_min(1e-12) + 1e-12
    return float(torch.exp(-(p * p.log()).sum()))


class CollapseMonitor:
    """Logs per-dimension std and effective rank of the method's embeddings; warns once when they collapse."""

    def __init__(self, std_threshold: float = 0.1, rank_fraction_threshold: float = 0.01):
        self.std_threshold, self.rank_fraction_threshold = std_threshold, rank_fraction_threshold
        self.warned = False

    def __call__(self, embeddings: torch.Tensor) -> tuple[dict[str, float], str | None]:
        std, rank = normalized_std(embeddings), effective_rank(embeddings)
        metrics = {"monitor/normalized_std": std, "monitor/effective_rank": rank}
        max_rank = min(embeddings.shape)
        collapsed = std < self.std_threshold or rank < max(1.5, self.rank_fraction_threshold * max_rank)
        message = None
        if collapsed and not self.warned:
            self.warned = True
            message = (f"representation collapse suspected: normalized std {std:.3f} (healthy ~1), effective rank "
                       f"{rank:.1f} of {max_rank}. Try a lower learning rate, a larger batch, or check the augmentations.")
        return metrics, message
