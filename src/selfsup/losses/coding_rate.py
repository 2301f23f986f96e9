"""Coding-rate losses: the total coding rate of MCR2 and EMP-SSL's patch invariance.

- :func:`total_coding_rate`: ``R(Z) = 1/2 logdet(I + d / (m eps) Z^T Z)`` (Yu, Chan, You, Song, Ma, "Learning
  Diverse and Discriminative Representations via the Principle of Maximal Coding Rate Reduction", NeurIPS 2020,
  eq. 2), the number of bits needed to code the m embeddings of Z up to a distortion ``eps``: large when they
  spread over many directions, small when they collapse. Maximised.
- :func:`patch_invariance`: the mean cosine similarity of every patch's embedding with the mean embedding of
  its image's patches (EMP-SSL, Tong, Chen, Ma, LeCun, arXiv:2304.03977, 2023). Maximised.
- :func:`emp_ssl_loss`: ``-(1/K) sum_k (R(Z_k) + lambda * D(Z_k, Z_mean))`` over the K patch sets.

Distributed semantics: the coding rate is that of the global batch. The embeddings are all-gathered with
autograd and every rank computes the same rate of the N_g global samples; the gather's backward sums onto this
rank's embeddings the identical gradient each of the N ranks' copies sends (N x the single-process gradient)
and DDP divides the summed parameter gradients by N, so N ranks x B give the loss and gradients of 1 rank x
N*B, as for Barlow Twins (:mod:`selfsup.losses.redundancy`). A per-rank rate would be another objective: the
rate of B samples saturates at a smaller value (rank <= B) and two ranks could code the same directions.
The invariance term only involves the patches of one image, which never leave their rank: a mean over this
rank's images that DDP's averaging makes the global mean (equal local batch sizes).
tests/test_distributed_coding_rate.py checks both.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.dist import all_gather_with_grad, is_distributed


def _gather_samples(z: torch.Tensor) -> torch.Tensor:
    """(K, B, D) -> (K, N_g, D): the samples of every rank, with autograd, ranks in order."""
    if not is_distributed():
        return z
    return all_gather_with_grad(z.transpose(0, 1).contiguous()).transpose(0, 1)


def total_coding_rate(z: torch.Tensor, eps: float = 0.2, gather: bool = True) -> torch.Tensor:
    """Total coding rate ``R(Z) = 1/2 logdet(I_d + d / (m * eps) Z^T Z)`` of m embeddings of dimension d.

    ``z``: (m, D), one set, or (K, m, D), K sets (EMP-SSL's patch sets: the k-th patch of every image); returns
    a scalar, or the K rates (K,). ``eps`` is the distortion term written epsilon^2 in MCR2's formula (EMP-SSL
    uses 0.2 with L2-normalised embeddings). The rate is maximised; it is 0 for Z = 0, and for m unit vectors
    it grows with the number of directions they span (collapsed: 1/2 log(1 + d / eps); m orthonormal vectors
    with m <= d: m/2 log(1 + d / (m eps))).

    The determinant is taken of the smaller Gram matrix (Sylvester: logdet(I_d + c Z^T Z) = logdet(I_m + c Z Z^T)),
    through a Cholesky factor (the matrix is I plus a positive semi-definite one), in float32 with autocast off.

    Distributed (``gather``): the rate of the global batch (m = N_g), see the module docstring.
    """
    if z.ndim not in (2, 3):
        raise ValueError(f"total_coding_rate expects (m, D) or (K, m, D) embeddings, got {tuple(z.shape)}")
    if eps <= 0:
        raise ValueError(f"total_coding_rate: eps must be > 0, got {eps}")
    with torch.autocast(device_type=z.device.type, enabled=False):
        sets = z.float() if z.ndim == 3 else z.float().unsqueeze(0)
        if gather:
            sets = _gather_samples(sets)
        m, d = sets.shape[1:]
        gram = sets @ sets.transpose(1, 2) if m <= d else sets.transpose(1, 2) @ sets
        eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
        factor = torch.linalg.cholesky(eye + (d / (m * eps)) * gram)
        rates = torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum(-1)  # 1/2 logdet = sum log diag(L)
    return rates if z.ndim == 3 else rates[0]


def patch_invariance(z: torch.Tensor) -> torch.Tensor:
    """EMP-SSL's invariance term ``D``: the mean, over the K patches and B images of ``z`` (K, B, D), of the
    cosine similarity between a patch's embedding and the mean of its image's K patch embeddings.

    1 when every image's patches agree; the mean is not detached (gradients flow through both sides, as in
    the paper's formula). Maximised. Local to each image (see the module docstring). Computed in float32.
    """
    if z.ndim != 3 or z.shape[0] < 2:
        raise ValueError(f"patch_invariance expects (K >= 2 patches, B, D) embeddings, got {tuple(z.shape)}")
    z = z.float()
    return F.cosine_similarity(z, z.mean(dim=0, keepdim=True), dim=-1).mean()


def emp_ssl_loss(z: torch.Tensor, eps: float = 0.2, invariance_weight: float = 200.0,
                 gather: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """The EMP-SSL objective, minimised: ``-(mean_k R(Z_k) + invariance_weight * D(Z, Z_mean))``.

    ``z`` (K, B, D): the (L2-normalised) projections of K patches of each of B images; ``R`` is
    :func:`total_coding_rate` of each patch set Z_k (the k-th patch of every image, over the global batch), and
    ``D`` :func:`patch_invariance`. The paper's lambda is 200, its epsilon^2 0.2. Returns ``(loss, terms)`` with
    the unweighted terms as floats (``tcr``: the mean rate; ``invariance``: the mean cosine).
    """
    rate = total_coding_rate(z, eps=eps, gather=gather).mean()
    invariance = patch_invariance(z)
    loss = -(rate + invariance_weight * invariance)
    return loss, {"tcr": float(rate.detach()), "invariance": float(invariance.detach())}
