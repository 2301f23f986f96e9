"""Joint-embedding predictive losses: predict the embedding of one part or view of an image from another.

Distributed semantics: both losses are means over this rank's samples (every sample has the same number of
targets and views), which DDP's gradient averaging turns into the global mean; no communication.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def latent_prediction_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str = "smooth_l1",
                           beta: float = 1.0) -> torch.Tensor:
    """I-JEPA's loss in latent space (Assran et al., "Self-Supervised Learning from Images with a
    Joint-Embedding Predictive Architecture", CVPR 2023, eq. 1): the distance between predicted and target
    patch representations, averaged over every target patch of every target block and every channel.

    ``kind="l2"``: the squared error of the paper's equation; ``"smooth_l1"`` (default): the Huber-like loss
    with threshold ``beta`` of the authors' code, which is quadratic for small errors and less sensitive to
    the occasional large one. The target is detached (it comes from the EMA target encoder). float32.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"latent_prediction_loss: prediction {tuple(prediction.shape)} and target "
                         f"{tuple(target.shape)} differ in shape")
    prediction, target = prediction.float(), target.detach().float()
    if kind == "l2":
        return F.mse_loss(prediction, target)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(prediction, target, beta=beta)
    raise ValueError(f"latent_prediction_loss: kind must be 'smooth_l1' or 'l2', got {kind!r}")


def view_prediction_loss(embeddings: torch.Tensor, num_global: int) -> torch.Tensor:
    """LeJEPA's prediction loss (Balestriero and LeCun, arXiv:2511.08544, 2025, section 5): the embeddings of
    every view of a sample (global and local) predict the mean embedding of its ``num_global`` global views,

        L_pred = 1 / (V B K) * sum_v sum_b || mean_g z_{g,b} - z_{v,b} ||^2,

    ``embeddings`` (V, B, K) with the global views first. No stop-gradient: the centre moves too; SIGReg is
    what prevents the collapse this loss alone would reach. float32.
    """
    if embeddings.ndim != 3 or not 1 <= num_global <= embeddings.shape[0]:
        raise ValueError(f"view_prediction_loss expects (views, batch, dim) embeddings with 1 <= num_global <= "
                         f"views; got shape {tuple(embeddings.shape)} and num_global={num_global}")
    embeddings = embeddings.float()
    centres = embeddings[:num_global].mean(dim=0)
    return (centres - embeddings).square().mean()


__all__ = ["latent_prediction_loss", "view_prediction_loss"]
