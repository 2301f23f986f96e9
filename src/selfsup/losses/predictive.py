"""Joint-embedding predictive losses: predict the embedding of one part or view of an image from another.

Distributed semantics: both losses are means over this rank's samples (every sample has the same number of
targets and views), which DDP's gradient averaging turns into the global mean; no communication.
:func:`standardise_over_batch` (a target transform, no gradient) takes its statistics over the global batch
(sums all-reduced), so every rank standardises with the same mean and variance.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.dist import all_reduce_sum


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


@torch.no_grad()
def standardise_over_batch(tokens: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Targets standardised per token position and channel over the (global) batch: ``tokens`` (B, N, D)
    become ``(t - mean_b t) / sqrt(var_b t + eps)``.

    Why: a layer-normalised token has unit energy, so an encoder lowers a latent-prediction loss by letting a
    part that is the same for every sample (a position's constant, the feature identity of a table column)
    take a larger share of that energy and shrinking what differs between samples. Removing the batch mean
    and scaling each position's spread to one leaves only what tells samples apart to be predicted. (data2vec,
    Baevski et al. 2022, normalises its targets per channel over a sample's time steps; here the statistics are
    over the batch, per position.) float32, no gradient (the targets come from the EMA encoder).
    """
    if tokens.ndim != 3:
        raise ValueError(f"standardise_over_batch expects (batch, tokens, dim) targets, got {tuple(tokens.shape)}")
    tokens = tokens.float()
    count = all_reduce_sum(tokens.new_tensor(float(tokens.shape[0])))
    mean = all_reduce_sum(tokens.sum(dim=0)) / count
    variance = all_reduce_sum((tokens - mean).square().sum(dim=0)) / count
    return (tokens - mean) / torch.sqrt(variance + eps)


__all__ = ["latent_prediction_loss", "standardise_over_batch", "view_prediction_loss"]
