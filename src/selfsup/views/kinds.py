"""Field kinds whose values are not pictures (tables, point clouds, graphs): one registered pipeline per kind.

Images (and volumes) go through crops, a batched photometric stage, image normalisation and a resizing
evaluation transform. A value of these kinds needs none of that; what it needs instead is said once per kind
by a :class:`KindPipeline` registered in :data:`KIND_PIPELINES` under the kind's name (:mod:`selfsup.fields`):

- ``make_view(value, recipe, size, gen, channel_kind) -> (view, empty params)``: a *finished* view, drawn from
  the sample's generator (seed, epoch, index) as every view is; it is the kind's entry of ``FIELD_VIEWS``
  (:mod:`selfsup.views.dataset`), so the view dataset's loop over ``ViewSpec.crops`` is unchanged: a kind's
  view recipes are frozen dataclasses with ``count`` and ``size`` (tokens per view: the mask grid);
- ``collate(values) -> batch``: the views (or evaluation inputs) of a batch, e.g. stacked tensors, or the
  block-diagonal batch of many small graphs; :class:`~selfsup.views.dataset.ViewCollate` uses it instead of
  its photometric stage for the samples of such a kind;
- ``eval_input(value)``: the evaluation transform of one value (:mod:`selfsup.eval.features`);
- ``raw_features(value) -> (D,) float tensor``: the kind's raw baseline row (the "raw pixels" of tables are
  their standardised, one-hot encoded columns);
- ``data_hint``: what to give ``data.source`` for this kind, for the messages of a mismatch;
- ``default_views(count) -> recipe``: the recipe that a method written with image crops (SimCLR, VICReg and
  the other joint-embedding methods) gets on this kind (:func:`adapt_views`), so those methods work on
  tables and point clouds through the same contract.

Modules of the kinds register here (:mod:`selfsup.views.table`, :mod:`selfsup.views.points`,
:mod:`selfsup.views.graph`); nothing else in the pipeline names a kind.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from selfsup.fields import IMAGE_FIELDS
from selfsup.registry import Registry
from selfsup.views.spec import CropSpec, ViewSpec


@dataclass(frozen=True)
class KindPipeline:
    make_view: Callable[..., tuple[Any, torch.Tensor]]
    collate: Callable[[list], Any]
    eval_input: Callable[[Any], Any]
    raw_features: Callable[[Any], torch.Tensor]
    default_views: Callable[[int], Any]
    data_hint: str = ""  # where such data comes from, for messages ("a .csv / .parquet table or ...")


KIND_PIPELINES: Registry[KindPipeline] = Registry("field kind pipeline", key="source.fields",
                                                  plural="pipelines of non-image field kinds")


def stack(values: list) -> torch.Tensor:
    """The collate of kinds whose values share one shape (tables, point clouds at a fixed point count)."""
    return torch.stack(list(values))


def kind_of(source) -> str:
    """The kind of the field that ``source``'s views are made of: ``image`` for sources that declare no fields."""
    fields = getattr(source, "fields", IMAGE_FIELDS)
    return fields.get("image", next(iter(fields.values())))


def pipeline_of(source) -> KindPipeline | None:
    """The pipeline of ``source``'s kind, or None for images and volumes (their own executor)."""
    kind = kind_of(source)
    return KIND_PIPELINES.get(kind) if kind in KIND_PIPELINES else None


def adapt_views(views: ViewSpec, field_kind: str) -> ViewSpec:
    """A method's views on a backbone of ``field_kind``: image crop groups (a method written for images, e.g.
    SimCLR's two crops) become the kind's default recipe with the same counts; recipes of the kind itself
    (T-JEPA, Point-MAE, GraphMAE) stay as they are. Images and volumes: unchanged."""
    if field_kind not in KIND_PIPELINES:
        return views
    pipeline = KIND_PIPELINES.get(field_kind)
    crops = tuple(pipeline.default_views(crop.count) if isinstance(crop, CropSpec) else crop for crop in views.crops)
    if any(isinstance(crop, CropSpec) for crop in views.crops) and views.masks is not None:
        raise ValueError(f"this method masks image patches, which {field_kind} data does not have; use a method "
                         f"written for {field_kind}s (selfsup list) or a joint-embedding method")
    return dataclasses.replace(views, crops=crops)


__all__ = ["KIND_PIPELINES", "KindPipeline", "adapt_views", "kind_of", "pipeline_of", "stack"]
