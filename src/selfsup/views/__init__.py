"""View specs, the two-stage view executor (per-sample geometry, batched photometry), its batched device
counterpart (selfsup.views.device) and patch masks."""
from selfsup.views.augment import VIEW_OPS, ViewParams, apply_photometric, draw_view_params, make_view, sample_generator
from selfsup.views import bands  # noqa: F401  (registers the photometric operations for measurements)
from selfsup.views.device import DeviceViews
from selfsup.views.masks import (MASK_STRATEGIES, BlockMask, CubeMask, MaskStrategy, MultiBlockMask, RandomMask,
                                 TubeMask, build_mask_strategy)
from selfsup.views.spec import CropSpec, MaskSpec, TextSpec, ViewSpec
from selfsup.views import graph, points, table  # noqa: F401  (register the pipelines of their field kinds, views/kinds.py)

__all__ = ["MASK_STRATEGIES", "VIEW_OPS", "BlockMask", "CropSpec", "CubeMask", "TubeMask", "DeviceViews", "MaskSpec", "MaskStrategy", "MultiBlockMask",
           "RandomMask", "TextSpec", "ViewParams", "ViewSpec", "apply_photometric", "build_mask_strategy", "draw_view_params",
           "make_view", "sample_generator"]
