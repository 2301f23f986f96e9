"""The collapse monitor: per-dimension spread and effective rank of a method's embeddings during training, and
the entropy of a teacher's target distributions where the method reports them (``StepOutput.targets``).

Teacher-student methods with prototype heads (DINO, iBOT) have a collapse of their own that the embeddings do
not always show: every target becomes the uniform distribution over the K prototypes (the centring wins over
the sharpening), the loss sits at ln K and nothing is learnt (Caron et al., ICCV 2021, section 5.3 and fig. 7:
the target entropy goes to ln K). The monitor records the mean per-sample target entropy and says so when it
is near ln K.

The two embedding measures are also part of the after-training diagnostics (:mod:`selfsup.eval.diagnostics` imports
them from here: evaluation sits above the engine).
"""
from __future__ import annotations

import math

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


@torch.no_grad()
def target_entropy(targets: torch.Tensor) -> float:
    """Mean over samples of the entropy (nats) of each row of ``targets`` (B, K), probability distributions:
    ln K for uniform targets, 0 for one-hot ones."""
    p = targets.float().clamp_min(0)
    p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return float(-(p * p.clamp_min(1e-12).log()).sum(dim=1).mean())


class CollapseMonitor:
    """Logs per-dimension std and effective rank of the method's embeddings and, where the method reports its
    teacher's targets, their entropy; warns once per kind of collapse."""

    def __init__(self, std_threshold: float = 0.1, rank_fraction_threshold: float = 0.01,
                 uniform_fraction_threshold: float = 0.95):
        self.std_threshold, self.rank_fraction_threshold = std_threshold, rank_fraction_threshold
        #: targets whose mean entropy is above this fraction of ln K count as uniform
        self.uniform_fraction_threshold = uniform_fraction_threshold
        self.warned = False
        self.warned_uniform = False

    def __call__(self, embeddings: torch.Tensor | None,
                 targets: torch.Tensor | None = None) -> tuple[dict[str, float], str | None]:
        metrics: dict[str, float] = {}
        messages = []
        if embeddings is not None:
            std, rank = normalized_std(embeddings), effective_rank(embeddings)
            metrics.update({"monitor/normalized_std": std, "monitor/effective_rank": rank})
            max_rank = min(embeddings.shape)
            collapsed = std < self.std_threshold or rank < max(1.5, self.rank_fraction_threshold * max_rank)
            if collapsed and not self.warned:
                self.warned = True
                messages.append(f"representation collapse suspected: normalized std {std:.3f} (healthy ~1), effective "
                                f"rank {rank:.1f} of {max_rank}. Try a lower learning rate, a larger batch, or check "
                                "the augmentations.")
        if targets is not None and targets.shape[1] > 1:
            entropy, uniform = target_entropy(targets), math.log(targets.shape[1])
            metrics.update({"monitor/target_entropy": entropy, "monitor/target_entropy_fraction": entropy / uniform})
            if entropy > self.uniform_fraction_threshold * uniform and not self.warned_uniform:
                self.warned_uniform = True
                messages.append(f"teacher targets are uniform (entropy {entropy:.3f} of ln K = {uniform:.3f}, "
                                f"K = {targets.shape[1]}): the centring outweighs the sharpening and the loss stays at "
                                "ln K, so nothing is learnt. Try BatchNorm in the head (head_batch_norm=true, for "
                                "ResNets), a lower teacher temperature, fewer prototypes or a lower learning rate.")
        return metrics, " ".join(messages) or None
