"""View specs, the two-stage view executor (per-sample geometry, batched photometry) and patch masks."""
from selfsup.views.augment import apply_photometric, make_view, sample_generator
from selfsup.views.masks import (MASK_STRATEGIES, BlockMask, MaskStrategy, MultiBlockMask, RandomMask,
                                 build_mask_strategy, register_mask_strategy)
from selfsup.views.spec import CropSpec, MaskSpec, ViewSpec

__all__ = ["MASK_STRATEGIES", "BlockMask", "CropSpec", "MaskSpec", "MaskStrategy", "MultiBlockMask", "RandomMask",
           "ViewSpec", "apply_photometric", "build_mask_strategy", "make_view", "register_mask_strategy",
           "sample_generator"]
