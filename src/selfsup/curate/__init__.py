"""Curation of image collections before pre-training: deduplication (exact, perceptual and embedding
duplicates; :mod:`selfsup.curate.dedup`) and coreset selection toward a target set (SimCore;
:mod:`selfsup.curate.select`). Above evaluation: both read backbones' features."""
from selfsup.curate.dedup import dedup
from selfsup.curate.select import select

__all__ = ["dedup", "select"]
