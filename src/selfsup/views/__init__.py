"""View specs and the per-sample view executor."""
from selfsup.views.augment import make_view, sample_generator
from selfsup.views.spec import CropSpec, ViewSpec

__all__ = ["CropSpec", "ViewSpec", "make_view", "sample_generator"]
