"""The teacher's view that never changes and the cache it allows: when the teacher reads the whole image resized,
with no flip, crop or colour change (``teacher_view: clean``), its features of a sample are the same at every
epoch, so they are computed on first sight and reused (:class:`FeatureCache`, keyed by ``batch["index"]``, the
dataset sample index the view dataset delivers)."""
from __future__ import annotations

import torch

from selfsup.views import CropSpec


def clean_crop(size: int | None) -> CropSpec:
    """The un-augmented view: the whole image (its centred square) resized to ``size``, no flip, no colour."""
    return CropSpec(count=1, size=size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                    grayscale_p=0.0, blur_p=0.0, solarize_p=0.0, band_dropout_p=0.0, noise_p=0.0)


def is_deterministic(crop: CropSpec) -> bool:
    """Whether every draw of ``crop`` gives the same view of an image (so its teacher features can be cached):
    the whole image, no flip, turn or photometric change (``data.overhead`` adds random turns to every crop)."""
    return (tuple(crop.scale) == (1.0, 1.0) and tuple(crop.ratio) == (1.0, 1.0) and not crop.rot90
            and crop.flip_p == crop.vflip_p == crop.jitter_p == crop.grayscale_p == crop.blur_p == crop.solarize_p
            == crop.band_dropout_p == crop.noise_p == 0.0)


class FeatureCache:
    """Teacher features by dataset sample index (``batch["index"]``), computed on first sight and reused: valid
    only for a deterministic view (:func:`is_deterministic`) of a frozen teacher, where recomputing would give
    the same numbers. Plain tensors, not buffers: not in checkpoints (a resume refills it), not broadcast by DDP
    (each rank caches the samples it sees). Grows to the largest index seen; float32 on the features' device."""

    def __init__(self):
        self.features: torch.Tensor | None = None
        self.known: torch.Tensor | None = None
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return 0 if self.known is None else int(self.known.sum())

    def _grow(self, size: int, dim: int, device) -> None:
        old = 0 if self.features is None else len(self.features)
        if size <= old:
            return
        size = max(size, 2 * old)
        features = torch.zeros(size, dim, device=device)
        known = torch.zeros(size, dtype=torch.bool, device=device)
        if self.features is not None:
            features[:old], known[:old] = self.features, self.known
        self.features, self.known = features, known

    def __call__(self, index: torch.Tensor, images: torch.Tensor, compute) -> torch.Tensor:
        """``compute(images[rows])`` (B', D) for the samples not seen yet; the features of every ``index``."""
        index = index.long()
        if self.features is None:
            computed = compute(images).float()
            self._grow(int(index.max()) + 1, computed.shape[1], computed.device)
            self.features[index.to(computed.device)] = computed
            self.known[index.to(computed.device)] = True
            self.misses += len(index)
            return computed
        self._grow(int(index.max()) + 1, self.features.shape[1], self.features.device)
        index = index.to(self.features.device)
        rows = (~self.known[index]).nonzero().squeeze(1)
        if len(rows):
            self.features[index[rows]] = compute(images[rows.to(images.device)]).float()
            self.known[index[rows]] = True
        self.misses += len(rows)
        self.hits += len(index) - len(rows)
        return self.features[index]
