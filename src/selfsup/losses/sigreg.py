"""SIGReg, Sketched Isotropic Gaussian Regularization: Balestriero and LeCun, "LeJEPA: Provable and Scalable
Self-Supervised Learning Without the Heuristics", arXiv:2511.08544, 2025 (section 4 and its algorithm).

LeJEPA shows that the isotropic Gaussian is the embedding distribution that minimises the worst-case risk of
downstream linear and non-linear probes, and regularises embeddings towards it without teacher, stop-gradient
or whitening. SIGReg does it in two steps:

1. *Sketch* (Cramér-Wold): a distribution is N(0, I) if and only if every 1-D projection is N(0, 1), so the
   (N, D) embeddings are projected on S random unit directions a_s (:func:`sigreg_directions`);
2. *test* each projection against N(0, 1) with the Epps-Pulley statistic (Epps and Pulley, Biometrika 1983)
   (:func:`epps_pulley`), a weighted L2 distance between characteristic functions:

       T = N * integral over [-t_max, t_max] of w(t) |phi_N(t) - phi(t)|^2 dt,
       phi_N(t) = (1/N) sum_n exp(i t x_n),   phi(t) = exp(-t^2 / 2),   w(t) = exp(-t^2 / 2),

   on a trapezoid grid of knots. |phi_N(-t) - phi(-t)| = |phi_N(t) - phi(t)| (complex conjugates), so the grid
   covers [0, t_max] and the weights are doubled (as the authors' reference code does). The statistic is
   bounded, differentiable, and its gradient involves only cos / sin of the samples (no sorting, no moments
   that explode). Under N(0, 1) its expectation is about 1 whatever N; for a collapsed sample it grows like N.

SIGReg is the mean of T over the S directions (and over any leading dimensions, e.g. views).

Distributed semantics (docs/ARCHITECTURE.md, "Distributed semantics"; the bug once shipped in a well-known library was exactly this):

- the directions must be the SAME on every rank at a step: :func:`sigreg_directions` draws them on the CPU
  from a generator seeded by (seed, step) alone, so every rank (and a resumed run) draws identical ones
  without communication, and CPU and GPU runs agree;
- phi_N is over the GLOBAL batch: each rank's sums of cos / sin (with their autograd graph) are gathered with
  :func:`~selfsup.dist.all_gather_with_grad` and summed, and N is the global count. The gather's
  backward returns to each rank the gradients that every rank's (identical) loss sends to its samples, and
  DDP's averaging then gives exactly the single-process gradient of 1 rank x (world x B). A plain all_reduce
  without autograd would give each rank only its own share: gradients 1/world too small.
"""
from __future__ import annotations

import torch

from selfsup.dist import all_gather_with_grad, all_reduce_sum

# A fixed salt so (seed, step) of SIGReg does not collide with other seeded draws of the run.
_DIRECTION_SALT = 0x5169526567


def sigreg_directions(dim: int, num_slices: int, step: int, seed: int = 0,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """(dim, num_slices) random unit directions, a function of (seed, step) only: identical on every rank.

    Drawn in float64 on the CPU (device generators differ), then moved to ``device`` as float32. LeJEPA
    redraws them at every step, so over training the whole sphere of directions is covered.
    """
    gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) + _DIRECTION_SALT) % 2**63)
    directions = torch.randn(dim, num_slices, generator=gen, dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    return directions.to(device=device, dtype=torch.float32)


def _knots(num_knots: int, t_max: float, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Knots t on [0, t_max], phi(t) = exp(-t^2/2), and trapezoid weights x w(t), doubled for t < 0."""
    if num_knots < 2 or t_max <= 0:
        raise ValueError(f"epps_pulley needs num_knots >= 2 and t_max > 0, got {num_knots} and {t_max}")
    t = torch.linspace(0.0, t_max, num_knots, dtype=torch.float32, device=device)
    phi = torch.exp(-0.5 * t.square())
    dt = t_max / (num_knots - 1)
    weights = torch.full_like(t, 2 * dt)
    weights[[0, -1]] = dt  # the end knots of the doubled trapezoid rule (t = 0 is counted once)
    return t, phi, weights * phi


def epps_pulley(x: torch.Tensor, num_knots: int = 17, t_max: float = 3.0, gather: bool = True) -> torch.Tensor:
    """Epps-Pulley statistic of each column of ``x`` (..., N, S) against N(0, 1): returns (..., S).

    Samples run along dim -2; with ``gather`` (default) they are the rows of every rank together (see the
    module doc). Computed in float32 with autocast off (bf16 cos / sin of t * x would be too coarse).
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        t, phi, weights = _knots(num_knots, t_max, x.device)
        xt = x.unsqueeze(-1) * t  # (..., N, S, K)
        sums = torch.stack([xt.cos().sum(dim=-3), xt.sin().sum(dim=-3)])  # (2, ..., S, K)
        count = torch.tensor([float(x.shape[-2])], device=x.device)
        if gather:
            sums = all_gather_with_grad(sums.unsqueeze(0)).sum(dim=0)
            count = all_reduce_sum(count)
        cos_mean, sin_mean = sums / count
        error = (cos_mean - phi).square() + sin_mean.square()  # |phi_N(t) - phi(t)|^2
        return (error @ weights) * count


def sigreg(embeddings: torch.Tensor, directions: torch.Tensor, num_knots: int = 17, t_max: float = 3.0,
           gather: bool = True) -> torch.Tensor:
    """SIGReg loss of ``embeddings`` (..., N, D) along ``directions`` (D, S): the mean Epps-Pulley statistic
    over the S projections and any leading dimensions (LeJEPA applies it to each view's embeddings).

    Distributed: global over the batch (gathered with autograd); ``directions`` must be the same on every rank
    (use :func:`sigreg_directions`). ``gather=False`` computes it on this rank's samples only.
    """
    if embeddings.shape[-1] != directions.shape[0]:
        raise ValueError(f"sigreg: embeddings of width {embeddings.shape[-1]} but directions of width "
                         f"{directions.shape[0]}")
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        projections = embeddings.float() @ directions.float().to(embeddings.device)
    return epps_pulley(projections, num_knots, t_max, gather=gather).mean()


__all__ = ["epps_pulley", "sigreg", "sigreg_directions"]
