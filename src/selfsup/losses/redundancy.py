"""Redundancy-reduction losses: Barlow Twins, its mixed-sample regulariser, VICReg.

Distributed semantics: every batch statistic (per-dimension mean and standard deviation, cross-correlation,
covariance) is taken over the global batch, from embeddings all-gathered with autograd. Such a term has the
same value on every rank, and its gradient comes out right without any world-size factor: the backward of the
gather sums, onto this rank's embeddings, the identical gradient that each of the N ranks' copies of the loss
sends (N times the single-process gradient), and DDP then divides the summed parameter gradients by N. Terms
over local pairs (VICReg's invariance) are local means that DDP's averaging makes global.
tests/test_distributed_zoo.py checks both: N ranks x batch B give the loss and gradients of 1 rank x N*B.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.dist import all_gather_no_grad, all_gather_with_grad, rank


def _global(z: torch.Tensor, gather: bool) -> torch.Tensor:
    z = z.float()
    return all_gather_with_grad(z) if gather else z


def _standardise(z: torch.Tensor, eps: float) -> torch.Tensor:
    # Biased variance, as the BatchNorm1d(affine=False) of the Barlow Twins reference; eps keeps a constant
    # dimension finite (it standardises to 0 instead of 0/0).
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    return matrix - torch.diag_embed(torch.diagonal(matrix))


def barlow_twins(z_a: torch.Tensor, z_b: torch.Tensor, lambd: float = 0.0051, gather: bool = True,
                 eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins (Zbontar et al., "Self-Supervised Learning via Redundancy Reduction", ICML 2021, eq. 1).

    Each of the D dimensions of ``z_a`` and ``z_b`` (B, D) is standardised over the global batch of N_g samples
    (mean and biased standard deviation, with ``eps`` added to the variance); the cross-correlation is
    ``C = z_a_n.T @ z_b_n / N_g`` and the loss ``sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2``.
    Computed in float32.

    Distributed: the embeddings are all-gathered with autograd and every rank computes the same global loss.
    No scaling by the world size is needed: the gather's backward sums the N identical per-rank gradients
    (N x the single-process gradient on this rank's samples) and DDP divides by N, so 2 ranks x B equal
    1 rank x 2B in loss and gradients. (The reference implementation instead all-reduces C without autograd,
    which scales the gradient by 1/N.) Cost: each rank multiplies the (N_g, D) global matrices, D x D x N_g.
    """
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(f"barlow_twins expects two (B, D) tensors of one shape, got {tuple(z_a.shape)} and "
                         f"{tuple(z_b.shape)}")
    a = _standardise(_global(z_a, gather), eps)
    b = _standardise(_global(z_b, gather), eps)
    c = a.T @ b / a.shape[0]
    on_diagonal = (1 - torch.diagonal(c)).pow(2).sum()
    return on_diagonal + lambd * _off_diagonal(c).pow(2).sum()


def mixed_barlow_regularizer(z_a: torch.Tensor, z_b: torch.Tensor, z_mixed: torch.Tensor, permutation: torch.Tensor,
                             mix_lambda: float, gather: bool = True, lambd: float = 0.0051, eps: float = 1e-5,
                             mixed_with: str = "b") -> torch.Tensor:
    """Mixed-sample regulariser of Mixed Barlow Twins (Bandara, De Melo and Patel, "Guarding Barlow Twins Against
    Overfitting with Mixed Samples", arXiv:2312.02151, 2023).

    The paper mixes view A with a shuffled view B in input space, ``x_m = mix_lambda * x_a + (1 - mix_lambda) *
    x_b[permutation]`` (mix_lambda ~ Beta(1, 1) in the paper), and ``z_mixed`` is its embedding. Assuming that
    linear interpolation in input space carries over to the standardised embeddings, the cross-correlations
    of the mixed embeddings with each view are predicted from those of the real ones:

        C^MA    = Z_M^T Z_A / N                C^MB    = Z_M^T Z_B / N
        C^MA_gt = (l Z_A^T Z_A + (1 - l) Z_B[perm]^T Z_A) / N
        C^MB_gt = (l Z_A^T Z_B + (1 - l) Z_B[perm]^T Z_B) / N

    and the regulariser is ``lambd / 2 * (||C^MA - C^MA_gt||_F^2 + ||C^MB - C^MB_gt||_F^2)`` (the lambda_BT / 2
    factor of the authors' implementation). The method adds ``weight * regulariser`` to
    :func:`barlow_twins`, the paper's lambda_reg; the authors' CIFAR script writes the factor as
    ``mixup_loss_scale * lambd`` without the 1/2, i.e. weight = 2 * mixup_loss_scale. As in the authors'
    code, gradients flow through both sides (the targets are not detached). Z_A, Z_B and Z_M are each
    standardised over the global batch like in :func:`barlow_twins`.

    ``mixed_with="a"`` is for a caller that mixes view A with itself, ``x_m = l x_a + (1 - l) x_a[perm]``:
    the shuffled term of both targets then uses Z_A[perm] instead of Z_B[perm]. It is not the paper's form.

    Distributed: ``permutation`` (B,) indexes this rank's batch (the mixing happens in input space, which
    never leaves the rank); it is gathered as a constant and offset by rank, so the global shuffle is the
    block-diagonal permutation made of the ranks' permutations. ``mix_lambda`` must be the same on every rank
    (draw it from a seed shared by all ranks). Embeddings are gathered with autograd; every rank computes the
    same global value, which, as for :func:`barlow_twins`, needs no world-size factor under DDP averaging.
    """
    if not (z_a.shape == z_b.shape == z_mixed.shape) or z_a.ndim != 2:
        raise ValueError(f"mixed_barlow_regularizer expects three (B, D) tensors of one shape, got "
                         f"{tuple(z_a.shape)}, {tuple(z_b.shape)} and {tuple(z_mixed.shape)}")
    if permutation.shape != z_a.shape[:1]:
        raise ValueError(f"mixed_barlow_regularizer expects a permutation of shape ({z_a.shape[0]},), got "
                         f"{tuple(permutation.shape)}")
    a = _standardise(_global(z_a, gather), eps)
    b = _standardise(_global(z_b, gather), eps)
    m = _standardise(_global(z_mixed, gather), eps)
    permutation = permutation.to(device=a.device, dtype=torch.long)
    if gather and a.shape[0] > z_a.shape[0]:
        permutation = all_gather_no_grad(permutation + rank() * z_a.shape[0])
    if mixed_with not in ("a", "b"):
        raise ValueError(f"mixed_barlow_regularizer: mixed_with must be 'a' or 'b', got {mixed_with!r}")
    b_shuffled = (b if mixed_with == "b" else a)[permutation]
    n = a.shape[0]
    c_ma, c_mb = m.T @ a / n, m.T @ b / n
    target_ma = (mix_lambda * (a.T @ a) + (1 - mix_lambda) * (b_shuffled.T @ a)) / n
    target_mb = (mix_lambda * (a.T @ b) + (1 - mix_lambda) * (b_shuffled.T @ b)) / n
    return lambd / 2 * ((c_ma - target_ma).pow(2).sum() + (c_mb - target_mb).pow(2).sum())


def vicreg(z_a: torch.Tensor, z_b: torch.Tensor, sim_weight: float = 25.0, var_weight: float = 25.0,
           cov_weight: float = 1.0, gamma: float = 1.0, eps: float = 1e-4,
           gather: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """VICReg (Bardes, Ponce and LeCun, "Variance-Invariance-Covariance Regularization for Self-Supervised
    Learning", ICLR 2022, section 3 and algorithm 1).

    - invariance: mean squared error between ``z_a[i]`` and ``z_b[i]`` (mean over samples and dimensions);
    - variance: per branch, ``mean_j relu(gamma - sqrt(Var(z_j) + eps))`` with the unbiased variance over the
      batch; the two branches are averaged (the reference code's ``/ 2``);
    - covariance: per branch, the sum of squared off-diagonal entries of the (unbiased) covariance matrix,
      divided by D; the two branches are summed.

    Returns ``(sim_weight * invariance + var_weight * variance + cov_weight * covariance, terms)`` where
    ``terms`` holds the three unweighted terms as floats. Computed in float32.

    Distributed: variance and covariance are taken over the global batch (embeddings gathered with autograd;
    same value on every rank, no world-size factor needed, see the module docstring). The invariance term is
    the mean over this rank's pairs; DDP's averaging makes it the global mean (equal local batch sizes).
    """
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(f"vicreg expects two (B, D) tensors of one shape, got {tuple(z_a.shape)} and "
                         f"{tuple(z_b.shape)}")
    invariance = F.mse_loss(z_a.float(), z_b.float())
    all_a, all_b = _global(z_a, gather), _global(z_b, gather)

    def variance_term(z: torch.Tensor) -> torch.Tensor:
        return F.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()

    def covariance_term(z: torch.Tensor) -> torch.Tensor:
        centred = z - z.mean(dim=0)
        covariance = centred.T @ centred / (z.shape[0] - 1)
        return _off_diagonal(covariance).pow(2).sum() / z.shape[1]

    variance = (variance_term(all_a) + variance_term(all_b)) / 2
    covariance = covariance_term(all_a) + covariance_term(all_b)
    loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
    terms = {"invariance": float(invariance.detach()), "variance": float(variance.detach()),
             "covariance": float(covariance.detach())}
    return loss, terms
