"""Training data loading: a dataset of per-sample views and a resumable epoch sampler.

With ``augment="device"`` (``data.augment=device``) the dataset delivers each sample's uint8 image and its
views' parameters (one row per view, :meth:`~selfsup.views.augment.ViewParams.row`) instead of the views, and
the collate step stacks them; :mod:`selfsup.views.device` makes the views on the training device.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from selfsup.data.decode import DecodeError
from selfsup.data.pixels import default_channel_kind
from selfsup.fields import AUDIO, IMAGE, IMAGE_FIELDS, TEXT, VIDEO, VOLUME
from selfsup.registry import Registry
from selfsup.views.augment import apply_photometric, draw_view_params, make_view, sample_generator, view_from_params
from selfsup.views.device import NUM_GEOMETRY
from selfsup.views.masks import check_mask_spec, draw_masks
from selfsup.views.preprocess import Preprocess
from selfsup.views.spec import ViewSpec
from selfsup.views.text import choose_caption, require_text_extra, tokenize
from selfsup.views.audio import make_audio_view
from selfsup.views.video import make_video_view
from selfsup.views.volume import make_volume_view
from selfsup.views import graph, points, table  # noqa: F401  (register their kinds' pipelines)
from selfsup.views.kinds import KIND_PIPELINES


#: View operations per field kind (selfsup.fields): ``(value, crop, size, generator, channel_kind) -> (view,
#: params)``. A source's fields decide which one makes its views; images are the first kind, volumes the second
#: (:mod:`selfsup.views.volume`: 3-D crops, flips and intensity jitter, all in stage 1).
FIELD_VIEWS: Registry = Registry("view operation", key="source.fields", plural="view operations (by field kind)")
FIELD_VIEWS.add(IMAGE.name, make_view)
FIELD_VIEWS.add(VOLUME.name, make_volume_view)
for _kind, _pipeline in KIND_PIPELINES.items():  # tables, point clouds, graphs: finished views (views/kinds.py)
    FIELD_VIEWS.add(_kind, _pipeline.make_view)
FIELD_VIEWS.add(AUDIO.name, make_audio_view)  # log-mel views of waveforms (selfsup.views.audio)
FIELD_VIEWS.add(VIDEO.name, make_video_view)  # clips, one spatial augmentation per clip (selfsup.views.video)


def viewed_field(source) -> tuple[str, str]:
    """(field name, kind) of the field of ``source`` that views are made of: the first whose kind has view
    operations. Sources that declare no ``fields`` are image sources."""
    fields = getattr(source, "fields", IMAGE_FIELDS)
    for name, kind in fields.items():
        if kind in FIELD_VIEWS:
            return name, kind
    raise ValueError(f"{getattr(source, 'name', source)}: no field of a kind with view operations (its fields: "
                     f"{fields}; view operations exist for: {', '.join(FIELD_VIEWS)})")


def check_text_field(source, views: ViewSpec) -> None:
    """A method that reads captions (``views.text``) needs a source with a ``text`` field; fail at start."""
    if views.text is None:
        return
    fields = getattr(source, "fields", IMAGE_FIELDS)
    if TEXT.name not in fields.values():
        raise ValueError(
            f"this method trains on image-text pairs, but {getattr(source, 'name', source)} has no captions (its "
            f"fields: {', '.join(fields)}): give data.source a manifest (.csv / .jsonl / .parquet with image and "
            "caption columns), a folder of images with sidecar .txt captions, tar shards of jpg + txt, or the "
            "embedded digits-captions")
    require_text_extra()


def channel_kind_of(source) -> str:
    """Which photometric operations the images of ``source`` take (:mod:`selfsup.data.pixels`): its own
    ``channel_kind``, else rgb / gray by channel count."""
    kind = getattr(source, "channel_kind", None)
    return kind or default_channel_kind(int(getattr(source, "channels", 3)), raw=False)


def fixed_image_size(source) -> tuple[int, int] | None:
    """(H, W) shared by every image of ``source``, or None when sizes may differ (image folders): batching raw
    images, as ``data.augment=device`` does, needs one size."""
    images = getattr(source, "images", None)
    return tuple(images.shape[-2:]) if isinstance(images, np.ndarray) and images.ndim == 4 else None


class ViewDataset(Dataset):
    """Delivers sample i's views (geometry done, photometry pending) as the method's ViewSpec asks; with
    ``augment="device"``, its image and the views' parameters (geometry and photometry both pending)."""

    def __init__(self, source, views: ViewSpec, image_size: int, seed: int, augment: str = "workers"):
        self.source, self.views, self.image_size, self.seed = source, views, image_size, seed
        self.augment = augment
        self.epoch = 0
        self.make_view = FIELD_VIEWS.get(viewed_field(source)[1])
        self.field_kind = viewed_field(source)[1]
        self.kind = channel_kind_of(source)
        if views.masks is not None:
            check_mask_spec(views.masks, views.view_sizes(image_size))
        check_text_field(source, views)
        if views.boxes and viewed_field(source)[1] != IMAGE.name:
            raise ValueError(f"this method matches locations between views (ViewSpec.boxes), which needs images; "
                             f"{getattr(source, 'name', source)} holds {viewed_field(source)[1]}s")

    def __len__(self) -> int:
        return len(self.source)

    def _image(self, index: int) -> tuple[int, torch.Tensor]:
        """(the index actually used, its image): a file that went bad after the scan gives way to the next."""
        for attempt in range(len(self.source)):
            i = (index + attempt) % len(self.source)
            try:
                return i, self.source.get_image(i)
            except DecodeError as error:  # a file that went bad after the scan: use the next one, loudly
                warnings.warn(f"skipping sample {i}: {error}", stacklevel=2)
        raise RuntimeError("no decodable image left in the data source")

    def __getitem__(self, key) -> dict:
        epoch, requested = key if isinstance(key, tuple) else (self.epoch, key)
        index, image = self._image(requested)
        gen = sample_generator(self.seed, epoch, requested)
        views, params, boxes = [], [], []
        for crop in self.views.crops:
            size = crop.size or self.image_size
            for _ in range(crop.count):
                if self.augment == "device":  # the same generator calls as make_view, hence the same views
                    params.append(draw_view_params(image.shape[-2], image.shape[-1], crop, gen, self.kind).row())
                    boxes.append(params[-1][:NUM_GEOMETRY])
                elif self.views.boxes:  # make_view's draws and view, keeping the geometry
                    p = draw_view_params(image.shape[-2], image.shape[-1], crop, gen, self.kind)
                    views.append(view_from_params(image, p, size))
                    params.append(torch.tensor(p.photometric))
                    boxes.append(p.row()[:NUM_GEOMETRY])
                else:
                    view, p = self.make_view(image, crop, size, gen, self.kind)
                    views.append(view)
                    params.append(p)
        labels = getattr(self.source, "labels", None)
        label = int(labels[index]) if labels is not None else -1  # supervised references (SupCon) only
        if self.augment == "device":
            sample = {"image": image, "view_params": torch.tensor(params)}  # (views, GEOMETRY + NUM_PARAMS)
        else:
            sample = {"views": views, "params": params}
        sample.update(index=index, label=label)
        if self.field_kind in KIND_PIPELINES:  # its collate makes the batch (selfsup.views.kinds)
            sample["field_kind"] = self.field_kind
        if self.views.boxes:
            sample["boxes"] = torch.tensor(boxes, dtype=torch.float32)  # (views, NUM_GEOMETRY)
        if self.views.masks is not None:  # own generator per view (seed, epoch, index, view): crops unchanged
            sample["masks"] = draw_masks(self.views.masks, self.views.view_sizes(self.image_size), self.seed, epoch,
                                         requested)
        if self.views.text is not None:  # drawn after the crops, so the crops are those of an image-only method
            caption = choose_caption(self.source.get_text(index), gen)
            sample["text"] = tokenize([caption], self.views.text.context_length)[0]
        return sample


class ViewCollate:
    """Stacks a batch and runs the batched photometric stage (the operations of ``channel_kind``) and
    normalisation with ``preprocess``'s mean and std (in the worker process); in device mode it only stacks
    images and parameters (selfsup.views.device does the rest). Volume views (B, C, D, H, W) are only
    normalised: their photometry happened in stage 1."""

    def __init__(self, preprocess: Preprocess, channel_kind: str | None = None):
        self.mean, self.std = preprocess.mean_std()
        self.kind = channel_kind

    def __call__(self, samples: list[dict]) -> dict:
        if "image" in samples[0]:  # device mode
            batch = {"images": torch.stack([s["image"] for s in samples]),
                     "view_params": torch.stack([s["view_params"] for s in samples])}
        elif "field_kind" in samples[0]:  # tables, point clouds, graphs: finished views, the kind's collate
            collate = KIND_PIPELINES.get(samples[0]["field_kind"]).collate
            batch = {"views": [collate([s["views"][v] for s in samples]) for v in range(len(samples[0]["views"]))]}
        else:
            views = []
            for v in range(len(samples[0]["views"])):
                stacked = torch.stack([s["views"][v] for s in samples])
                if stacked.ndim == 5:  # volumes: their views are complete (selfsup.views.volume); normalise only
                    views.append((stacked - self.mean[..., None]) / self.std[..., None])
                    continue
                if samples[0]["params"][v].numel() == 0:  # complete 2-D views (spectrograms): normalise only
                    views.append((stacked - self.mean) / self.std)
                    continue
                params = torch.stack([s["params"][v] for s in samples])
                views.append((apply_photometric(stacked, params, self.kind) - self.mean) / self.std)
            batch = {"views": views}
        batch["index"] = torch.tensor([s["index"] for s in samples])
        batch["label"] = torch.tensor([s.get("label", -1) for s in samples])
        if "masks" in samples[0]:
            batch["masks"] = {key: torch.stack([s["masks"][key] for s in samples]) for key in samples[0]["masks"]}
        if "text" in samples[0]:
            batch["text"] = torch.stack([s["text"] for s in samples])
        if "boxes" in samples[0]:
            batch["boxes"] = torch.stack([s["boxes"] for s in samples])
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
