"""Views of point clouds (the field kind ``points``): every cloud centred, scaled into the unit sphere and
resampled to one point count, then augmented, all from the sample's own generator (seed, epoch, index).

A view (:class:`PointViewSpec`) draws, in this order:

1. ``num_points`` points (without replacement when the cloud has enough, else with);
2. a rotation: ``rotate="so3"`` a uniformly random one, ``"z"`` about the vertical axis only (scanned
   objects that stand upright), ``"none"``;
3. a scaling of each axis by a factor in ``scale`` (anisotropic, as Point-MAE's scale-and-translate);
4. Gaussian jitter of ``jitter_std`` per coordinate (clipped at 5 std);
5. point dropout (PointNet++'s random input dropout, Qi et al. 2017): a fraction up to ``dropout`` of the
   points is replaced by the first point, so the view keeps its size.

Evaluation (:func:`eval_points`) centres, scales and takes ``POINTS_PER_CLOUD`` evenly spaced points, no
augmentation. The view is (num_points, 3); the patches of the encoder are made on the device from it
(:mod:`selfsup.backbones.point_ops`).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from selfsup.views.kinds import KIND_PIPELINES, KindPipeline, stack
from selfsup.views.masks import MASK_STRATEGIES, RandomMask

POINTS_PER_CLOUD = 256  # the point count of evaluation inputs and, by default, of every view


@dataclass(frozen=True)
class PointViewSpec:
    count: int = 2
    size: int | None = None  # point patches per view, the grid of patch masks (set by Point-MAE)
    num_points: int = POINTS_PER_CLOUD
    rotate: str = "so3"  # "so3", "z" or "none"
    scale: tuple[float, float] = (0.8, 1.2)
    jitter_std: float = 0.01
    dropout: float = 0.0


def normalise_cloud(points: torch.Tensor) -> torch.Tensor:
    """Centred on its mean, scaled so that the farthest point is at distance 1."""
    centred = points.float() - points.float().mean(dim=0)
    return centred / centred.norm(dim=1).max().clamp(min=1e-8)


def _rotation(kind: str, gen: random.Random) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "z":
        t = gen.uniform(0, 2 * math.pi)
        c, s = math.cos(t), math.sin(t)
        return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    # a uniform random rotation: a unit quaternion from four Gaussians (Shoemake 1992)
    w, x, y, z = (gen.gauss(0, 1) for _ in range(4))
    n = math.sqrt(w * w + x * x + y * y + z * z) or 1.0
    w, x, y, z = w / n, x / n, y / n, z / n
    return torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def make_point_view(cloud: torch.Tensor, spec: PointViewSpec, size: int, gen: random.Random,
                    kind: str = "bands") -> tuple[torch.Tensor, torch.Tensor]:
    """One (num_points, 3) view of an (N, 3) cloud and an empty parameter row."""
    if cloud.ndim != 2 or cloud.shape[1] != 3 or cloud.shape[0] == 0:
        raise ValueError(f"a point view needs an (N, 3) cloud, got shape {tuple(cloud.shape)}")
    n = cloud.shape[0]
    chosen = gen.sample(range(n), spec.num_points) if n >= spec.num_points else \
        [gen.randrange(n) for _ in range(spec.num_points)]
    points = normalise_cloud(cloud[torch.tensor(chosen)])
    rotation = _rotation(spec.rotate, gen)
    if rotation is not None:
        points = points @ rotation.T
    points = points * torch.tensor([gen.uniform(*spec.scale) for _ in range(3)])
    noise_gen = torch.Generator().manual_seed(gen.getrandbits(63))
    if spec.jitter_std > 0:
        points = points + (spec.jitter_std * torch.randn(points.shape, generator=noise_gen)).clamp(
            -5 * spec.jitter_std, 5 * spec.jitter_std)
    if spec.dropout > 0:
        rate = gen.uniform(0, spec.dropout)
        dropped = torch.rand(spec.num_points, generator=noise_gen) < rate
        points = torch.where(dropped[:, None], points[:1], points)
    return points, torch.zeros(0)


def eval_points(cloud: torch.Tensor, num_points: int = POINTS_PER_CLOUD) -> torch.Tensor:
    """The evaluation input: normalised, ``num_points`` evenly spaced points (repeated when the cloud has fewer)."""
    index = torch.linspace(0, cloud.shape[0] - 1, num_points).round().long()
    return normalise_cloud(cloud[index])


def default_point_views(count: int) -> PointViewSpec:
    """What joint-embedding methods (SimCLR, VICReg) get on point clouds: rotation, scaling, jitter, dropout."""
    return PointViewSpec(count=count, dropout=0.3)


KIND_PIPELINES.add("points", KindPipeline(make_view=make_point_view, collate=stack, eval_input=eval_points,
                                          raw_features=lambda cloud: eval_points(cloud).reshape(-1),
                                          default_views=default_point_views,
                                          data_hint="a folder of .ply / .xyz / .npy clouds or point-shapes"))


@MASK_STRATEGIES.register("random_tokens")
@dataclass(frozen=True)
class RandomTokens:
    """``round(ratio * G)`` of a 1-D sequence of G tokens (point patches), uniformly: MAE's random mask on a
    sequence (Point-MAE masks 60% of the patches)."""

    ratio: float = 0.6

    def __call__(self, grid_size: tuple[int, ...], gen: random.Random) -> dict[str, torch.Tensor]:
        return RandomMask(self.ratio)((1, int(grid_size[0])), gen)


__all__ = ["POINTS_PER_CLOUD", "PointViewSpec", "RandomTokens", "default_point_views", "eval_points", "make_point_view",
           "normalise_cloud"]
