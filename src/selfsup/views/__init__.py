"""View specs and the two-stage view executor (per-sample geometry, batched photometry)."""
from selfsup.views.augment import apply_photometric, make_view, sample_generator
from selfsup.views.spec import CropSpec, ViewSpec

__all__ = ["CropSpec", "ViewSpec", "apply_photometric", "make_view", "sample_generator"]
