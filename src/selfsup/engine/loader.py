"""Training data loading: a dataset of per-sample views and a resumable epoch sampler."""
from __future__ import annotations

import warnings

import torch
from torch.utils.data import Dataset, Sampler

from selfsup.views import ViewSpec, apply_photometric, make_view, sample_generator
from selfsup.views.masks import check_mask_spec, draw_masks


class ViewDataset(Dataset):
    """Delivers sample i's views (geometry done, photometry pending) as the method's ViewSpec asks."""

    def __init__(self, source, views: ViewSpec, image_size: int, seed: int):
        self.source, self.views, self.image_size, self.seed = source, views, image_size, seed
        self.epoch = 0
        if views.masks is not None:
            check_mask_spec(views.masks, views.view_sizes(image_size))

    def __len__(self) -> int:
        return len(self.source)

    def _image(self, index: int) -> torch.Tensor:
        from selfsup.data import DecodeError

        for attempt in range(len(self.source)):
            i = (index + attempt) % len(self.source)
            try:
                return self.source.get_image(i)
            except DecodeError as error:  # a file that went bad after the scan: use the next one, loudly
                warnings.warn(f"skipping sample {i}: {error}", stacklevel=2)
        raise RuntimeError("no decodable image left in the data source")

    def __getitem__(self, key) -> dict:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        image = self._image(index)
        gen = sample_generator(self.seed, epoch, index)
        views, params = [], []
        for crop in self.views.crops:
            size = crop.size or self.image_size
            for _ in range(crop.count):
                view, p = make_view(image, crop, size, gen)
                views.append(view)
                params.append(p)
        labels = getattr(self.source, "labels", None)
        label = int(labels[index]) if labels is not None else -1  # supervised references (SupCon) only
        sample = {"views": views, "params": params, "index": index, "label": label}
        if self.views.masks is not None:  # own generator per view (seed, epoch, index, view): crops unchanged
            sample["masks"] = draw_masks(self.views.masks, self.views.view_sizes(self.image_size), self.seed, epoch, index)
        return sample


class ViewCollate:
    """Stacks a batch and runs the batched photometric stage and normalisation (in the worker process)."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, samples: list[dict]) -> dict:
        views = []
        for v in range(len(samples[0]["views"])):
            batch = torch.stack([s["views"][v] for s in samples])
            params = torch.stack([s["params"][v] for s in samples])
            views.append((apply_photometric(batch, params) - self.mean) / self.std)
        batch = {"views": views, "index": torch.tensor([s["index"] for s in samples]),
                 "label": torch.tensor([s.get("label", -1) for s in samples])}
        if "masks" in samples[0]:
            batch["masks"] = {key: torch.stack([s["masks"][key] for s in samples]) for key in samples[0]["masks"]}
        return batch


class EpochBatchSampler(Sampler):
    """Yields this rank's batches of ``(epoch, index)`` keys.

    The epoch's order is a permutation drawn from (seed, epoch) alone; rank r takes every world-th sample.
    ``start_batch`` skips the batches a resumed run has already consumed. Incomplete last batches are dropped
    so every rank takes the same number of steps.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if num_samples // world_size < batch_size:
            raise ValueError(
                f"the per-rank batch ({batch_size}) is larger than the data per rank ({num_samples // world_size} images): "
                "lower train.batch_size or add data")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return (self.num_samples // self.world_size) // self.batch_size - self.start_batch

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=gen)[self.rank::self.world_size].tolist()
        total = (self.num_samples // self.world_size) // self.batch_size
        for b in range(self.start_batch, total):
            yield [(self.epoch, i) for i in order[b * self.batch_size:(b + 1) * self.batch_size]]
