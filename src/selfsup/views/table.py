"""Views of table rows (the field kind ``table``) and the feature-subset masks of T-JEPA.

A row arrives as a (2, F) float tensor (:mod:`selfsup.data.tables`): row 0 the encoded values (standardised
numbers; category indices, which the encoder rounds, so a little noise never changes a category), row 1 a 1
where the value is present. A view (:class:`TableViewSpec`) corrupts it in three ways, each drawn from the
sample's own generator:

- feature-subset masking: each present feature is hidden (presence 0, value 0) with probability
  ``feature_mask_p`` (one always survives): the encoder sees a "missing" token there, as for a missing value;
- Gaussian noise of ``noise_std`` on every value, with probability ``noise_p`` per view;
- swap corruption (SCARF: Bahri, Jiang, Tay, Metzler, "SCARF: Self-Supervised Contrastive Learning using
  Random Feature Corruption", ICLR 2022): each feature, with probability ``swap_p``, takes the value of the
  same column in another row. The other row is the next sample of the batch (the batch order is random), so
  the view carries a third row of swap flags and :func:`collate_rows` does the exchange.

:class:`FeatureSubsets` (``MASK_STRATEGIES["feature_subsets"]``) draws T-JEPA's context and target feature
subsets over the 1-D grid of feature tokens (Thimonier, Popineau, Rimmel, Doan, "T-JEPA: Augmentation-Free
Self-Supervised Learning for Tabular Data", 2024): fixed counts per sample, so that batches stack.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from selfsup.views.kinds import KIND_PIPELINES, KindPipeline
from selfsup.views.masks import MASK_STRATEGIES


@dataclass(frozen=True)
class TableViewSpec:
    count: int = 2
    size: int | None = None  # feature tokens per view, the grid of feature masks (set by T-JEPA)
    feature_mask_p: float = 0.0
    noise_p: float = 0.0
    noise_std: float = 0.1
    swap_p: float = 0.0


def make_table_view(row: torch.Tensor, spec: TableViewSpec, size: int, gen: random.Random,
                    kind: str = "bands") -> tuple[torch.Tensor, torch.Tensor]:
    """One view of a (2, F) row: (3, F) values, presence and swap flags (or (2, F) without swaps), and an
    empty parameter row. Draws, in this order: hidden features, noise, swapped features."""
    if row.ndim != 2 or row.shape[0] != 2:
        raise ValueError(f"a table view needs a (2, F) row (values, presence), got shape {tuple(row.shape)}")
    values, present = row[0].clone(), row[1].clone()
    width = values.shape[0]
    if spec.feature_mask_p > 0:
        hide = torch.tensor([gen.random() < spec.feature_mask_p for _ in range(width)]) & (present > 0)
        if bool(hide.all()) or int((present > 0).sum()) == int(hide.sum()):  # keep one present feature
            kept = [j for j in range(width) if present[j] > 0]
            if kept:
                hide[kept[gen.randrange(len(kept))]] = False
        present[hide], values[hide] = 0.0, 0.0
    if spec.noise_p > 0 and gen.random() < spec.noise_p:
        noise = torch.randn(width, generator=torch.Generator().manual_seed(gen.getrandbits(63)))
        values = torch.where(present > 0, values + spec.noise_std * noise, values)
    view = [values, present]
    if spec.swap_p > 0:
        view.append(torch.tensor([float(gen.random() < spec.swap_p) for _ in range(width)]))
    return torch.stack(view), torch.zeros(0)


def collate_rows(rows: list[torch.Tensor]) -> torch.Tensor:
    """(B, 2, F): the rows stacked; views with swap flags take those columns from the next row of the batch."""
    batch = torch.stack(list(rows))
    if batch.shape[1] == 2:
        return batch
    swap = batch[:, 2:3] > 0  # (B, 1, F)
    partner = batch[:, :2].roll(-1, dims=0)
    return torch.where(swap, partner, batch[:, :2])


def raw_row_features(row: torch.Tensor) -> torch.Tensor:
    """The raw baseline: the encoded values (standardised numbers, category indices), 0 where missing."""
    return (row[0] * (row[1] > 0)).float()


def default_table_views(count: int) -> TableViewSpec:
    """What joint-embedding methods (SimCLR, VICReg) get on tables: masking, a little noise, SCARF's swaps."""
    return TableViewSpec(count=count, feature_mask_p=0.2, noise_p=0.5, noise_std=0.1, swap_p=0.3)


KIND_PIPELINES.add("table", KindPipeline(make_view=make_table_view, collate=collate_rows,
                                         eval_input=lambda row: row.float(), raw_features=raw_row_features,
                                         default_views=default_table_views,
                                         data_hint="a .csv / .parquet table or a table-* dataset (table-wine, "
                                                   "table-breast-cancer, table-digits, table-factors)"))


@MASK_STRATEGIES.register("feature_subsets")
@dataclass(frozen=True)
class FeatureSubsets:
    """T-JEPA's masks over F feature tokens: ``num_targets`` target subsets of ``round(target_ratio F)``
    features each (drawn independently, so they may overlap) and a context of ``round(context_ratio F)``
    features, none of them a target (capped at what the targets leave). Keys: ``context`` (K_c,) and
    ``targets`` (M, K_t) feature indices, sorted."""

    num_targets: int = 2
    target_ratio: float = 0.25
    context_ratio: float = 0.5

    def counts(self, width: int) -> tuple[int, int]:
        per_target = max(1, int(round(self.target_ratio * width)))
        if per_target * self.num_targets >= width:
            raise ValueError(f"feature_subsets on {width} features: {self.num_targets} targets of {per_target} "
                             "features leave no context; lower target_ratio or num_targets")
        return per_target, max(1, min(int(round(self.context_ratio * width)), width - self.num_targets * per_target))

    def __call__(self, grid_size: tuple[int, ...], gen: random.Random) -> dict[str, torch.Tensor]:
        width = int(grid_size[0])
        per_target, context = self.counts(width)
        targets = [sorted(gen.sample(range(width), per_target)) for _ in range(self.num_targets)]
        taken = {j for t in targets for j in t}
        free = [j for j in range(width) if j not in taken]
        chosen = gen.sample(free, context)  # free holds at least width - M K_t >= context features
        return {"context": torch.tensor(sorted(chosen), dtype=torch.int64),
                "targets": torch.tensor(targets, dtype=torch.int64)}


__all__ = ["FeatureSubsets", "TableViewSpec", "collate_rows", "default_table_views", "make_table_view",
           "raw_row_features"]
