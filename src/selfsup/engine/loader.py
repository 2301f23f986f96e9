"""The training data of one rank: the DataLoader over the method's views, its resumable sampler, where views
are made (``data.augment``: in the workers, on the device, or the faster of the two) and the step that puts a
batch on the device.

The view dataset and its collate step are :mod:`selfsup.views.dataset`'s; ``data.cache`` decodes an image
folder once (:mod:`selfsup.data.cache`).
"""
from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from selfsup.config import Config
from selfsup.data.cache import open_cached
from selfsup.data.stream import is_streamed
from selfsup.data.stream_order import StreamBatchSampler, StreamOrder
from selfsup.dist import DistInfo, all_reduce_mean, barrier
from selfsup.engine.checkpoint import LoopState, rng_state, set_rng_state
from selfsup.fields import IMAGE
from selfsup.views.dataset import (EpochBatchSampler, ViewCollate, ViewDataset, channel_kind_of, fixed_image_size,
                                   viewed_field)
from selfsup.views.device import DeviceViews, ResizeRamp, seconds_per_batch
from selfsup.views.preprocess import Preprocess
from selfsup.views.spec import ViewSpec


class BatchToDevice:
    """Moves a batch as the collate step delivers it onto the training device; with ``data.augment=device``
    makes its views there (:class:`~selfsup.views.device.DeviceViews`); channels_last views when asked."""

    def __init__(self, device: torch.device, device_views: DeviceViews, channels_last: bool):
        self.device, self.device_views, self.channels_last = device, device_views, channels_last

    def _move(self, value):  # views (or raw images and view parameters), labels, indices, masks (a dict of tensors)
        if isinstance(value, torch.Tensor) or hasattr(value, "num_graphs"):  # tensors; graph batches (views/graph.py)
            return value.to(self.device, non_blocking=True)
        if isinstance(value, dict):
            return {key: self._move(v) for key, v in value.items()}
        if isinstance(value, list):
            return [self._move(v) for v in value]
        return value

    def __call__(self, batch: dict, progress: float = 1.0) -> dict:
        """The batch on the device; ``progress`` (of training, in [0, 1]) sets the view sizes under
        ``data.progressive_resize``."""
        batch = self._move(batch)
        if "images" in batch:  # data.augment=device: the views are made here, a batch at a time
            batch = self.device_views(batch, progress)
        if self.channels_last:
            batch["views"] = [v.contiguous(memory_format=torch.channels_last) for v in batch["views"]]
        return batch


@dataclass
class TrainData:
    loader: DataLoader
    sampler: EpochBatchSampler | StreamBatchSampler  # streamed shards: in shard order (selfsup.data.stream_order)
    augment: str  # where views are made: "workers" or "device"
    to_device: BatchToDevice
    accumulate: int  # micro-batches per optimizer step
    epoch_batches: int  # micro-batches this rank takes per epoch (the incomplete last one dropped)

    def view_size(self, progress: float) -> int | None:
        """The side of the full-size views at ``progress`` under ``data.progressive_resize``, else None."""
        ramp = self.to_device.device_views.ramp  # set only when the views are made on the device (build_train_data)
        return None if ramp is None else ramp.size_at(progress)

    @property
    def batches_per_epoch(self) -> int:
        """Micro-batches this rank takes per epoch (streamed shards: of the first epoch)."""
        return self.epoch_batches

    def _stream_positions(self, state: LoopState) -> list[list[int]] | None:
        if not isinstance(self.sampler, StreamBatchSampler):
            return None
        return self.sampler.order.positions(state.epoch, state.batch_in_epoch)

    def _check_stream_positions(self, state: LoopState) -> None:
        """A resumed streamed run must find its streams where its checkpoint left them."""
        expected = self._stream_positions(state)
        if expected is not None and state.stream_positions is not None and state.stream_positions != expected:
            raise ValueError(f"the checkpoint's stream positions (samples per stream per process) {state.stream_positions}"
                             f" differ from {expected}, those of this run at epoch {state.epoch}, batch "
                             f"{state.batch_in_epoch}: the shards, their index, data.streams or the number of "
                             "processes changed since; resume with the same ones")

    def step_batches(self, state: LoopState) -> Iterator[list[dict]]:
        """The micro-batches of each optimizer step from ``state``'s position on, epoch after epoch, endlessly.

        ``state.batch_in_epoch`` counts a step's micro-batches as they are handed out and ``state.epoch``
        moves on when an epoch has too few left for another step, so a checkpoint taken after a step resumes
        right after it (the epoch's order depends on (seed, epoch) alone). Each epoch gets a new iterator,
        hence new workers, as in every PyTorch loop. Streamed shards record each stream's position in
        ``state.stream_positions`` too."""
        self._check_stream_positions(state)
        while True:
            self.sampler.set_epoch(state.epoch, state.batch_in_epoch)
            batches = iter(self.loader)
            while len(group := list(itertools.islice(batches, self.accumulate))) == self.accumulate:
                state.batch_in_epoch += self.accumulate
                state.stream_positions = self._stream_positions(state)
                yield group
            state.epoch += 1
            state.batch_in_epoch = 0


def _worker_init(worker_id: int) -> None:
    # Views draw from per-sample generators; keep stray global RNG use in workers distinct and seeded.
    info = torch.utils.data.get_worker_info()
    np.random.seed(info.seed % 2**32)
    random.seed(info.seed)


def build_train_data(cfg: Config, source, views: ViewSpec, preprocess: Preprocess, dist_info: DistInfo,
                     channels_last: bool, log: Callable[[str], None]) -> TrainData:
    """This rank's share of ``source``, delivered as the method's ``views`` in micro-batches of
    ``train.batch_size / (world size x train.accumulate)``."""
    tc, world = cfg.train, dist_info.world_size
    if tc.batch_size % (world * tc.accumulate):
        raise ValueError(f"train.batch_size={tc.batch_size} must be divisible by world size x train.accumulate "
                         f"= {world} x {tc.accumulate}")
    micro_batch = tc.batch_size // (world * tc.accumulate)
    if cfg.data.cache:  # an image folder decoded once into a memmap; the main rank builds it
        source = open_cached(source, cfg.data.image_size, cfg.data.cache_size, cfg.runs_dir, log,
                             build=dist_info.is_main, wait=barrier)
    if is_streamed(source):  # read in shard order: streams of whole shards, a shuffle buffer within each
        streams = cfg.data.streams or max(1, cfg.data.num_workers)
        sampler = StreamBatchSampler(StreamOrder(source.counts, micro_batch, cfg.seed, world, streams,
                                                 cfg.data.shuffle_buffer), dist_info.rank)
        epoch_batches = sampler.batches_per_epoch
        log(f"streaming {len(source.counts)} shards: {streams} stream(s) per process, a shuffle buffer of "
            f"{cfg.data.shuffle_buffer} samples per shard; {epoch_batches} batches of {micro_batch} per process in "
            f"epoch 0 ({len(source) - epoch_batches * micro_batch * world} of {len(source)} samples left out)")
    else:
        sampler = EpochBatchSampler(len(source), micro_batch, cfg.seed, dist_info.rank, world)
        epoch_batches = (len(source) // world) // micro_batch
    if epoch_batches < tc.accumulate:
        raise ValueError(f"an optimizer step takes train.accumulate={tc.accumulate} micro-batches of {micro_batch} "
                         f"images, more than one epoch holds ({len(source)} images over {world} process(es)): "
                         "lower train.accumulate or train.batch_size, or add data")
    kind = channel_kind_of(source)
    ramp = resize_ramp(cfg, views)
    to_device = BatchToDevice(dist_info.device, DeviceViews(views, preprocess, kind, ramp), channels_last)

    def make_loader(augment: str) -> DataLoader:
        workers = cfg.data.num_workers
        return DataLoader(ViewDataset(source, views, cfg.data.image_size, cfg.seed, augment),
                          batch_sampler=sampler, num_workers=workers, collate_fn=ViewCollate(preprocess, kind),
                          pin_memory=dist_info.device.type == "cuda", worker_init_fn=_worker_init if workers else None,
                          persistent_workers=False, prefetch_factor=4 if workers else None)

    # Progressive resizing sizes each batch's views on the device: "auto" means the device there.
    augment = choose_augment("device" if ramp else cfg.data.augment, source, make_loader, to_device, log)
    if ramp and augment != "device":
        raise ValueError(f"data.progressive_resize: the views of {source.name} are made in the DataLoader workers "
                         "(see the line above), and progressive resizing needs them made on the device; remove "
                         "data.progressive_resize, or use data.cache=true for an image folder of mixed sizes")
    return TrainData(make_loader(augment), sampler, augment, to_device, tc.accumulate, epoch_batches)


def resize_ramp(cfg: Config, views: ViewSpec) -> ResizeRamp | None:
    """``data.progressive_resize`` as the device stage applies it, or None."""
    resize = cfg.data.progressive_resize
    if resize is None:
        return None
    if views.masks is not None:
        raise ValueError("data.progressive_resize: this method draws patch masks for views of data.image_size, which "
                         "smaller views would not match; progressive resizing is for methods without masks "
                         "(remove data.progressive_resize)")
    return ResizeRamp(resize.start_size, cfg.data.image_size, resize.ramp[0], resize.ramp[1], resize.multiple)


def holds_images(source) -> bool:
    """Whether ``source``'s views are 2-D images (the device path and channels_last are for them), not volumes."""
    return viewed_field(source)[1] == IMAGE.name


def choose_augment(requested: str, source, make_loader: Callable[[str], DataLoader], to_device: BatchToDevice,
                   log: Callable[[str], None]) -> str:
    """Where views are made: ``data.augment`` as asked, "workers" where the images differ in size (raw
    images of a batch must stack), or for "auto" the path that delivers a batch's views faster, measured
    on a few batches of each (:func:`selfsup.views.device.seconds_per_batch`)."""
    if requested == "workers":
        return "workers"
    if not holds_images(source):
        log(f"data.augment={requested}: the device path makes 2-D image views, and {source.name} holds "
            f"{viewed_field(source)[1]}s; making views in the DataLoader workers instead")
        return "workers"
    if fixed_image_size(source) is None:
        log(f"data.augment={requested}: the images of {source.name} differ in size, so batches of raw "
            "images cannot be stacked; making views in the DataLoader workers instead (data.cache=true "
            "decodes an image folder once to one size)")
        return "workers"
    if requested == "device":
        return "device"
    device = to_device.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    rng = rng_state()  # a DataLoader iterator draws its base seed from the global RNG: leave it as it was
    seconds = {}
    for mode in ("workers", "device"):
        batches = itertools.chain.from_iterable(itertools.repeat(make_loader(mode)))  # epochs may be shorter
        seconds[mode] = seconds_per_batch(batches, to_device, count=4, sync=sync)
        del batches  # stops this loader's workers before the next path is measured
    set_rng_state(rng)
    # The mean over ranks, so that every rank makes the same choice.
    workers_s, device_s = all_reduce_mean(torch.tensor(list(seconds.values()), device=device)).tolist()
    choice = "device" if device_s < workers_s else "workers"
    log(f"data.augment=auto: {workers_s * 1e3:.1f} ms per batch with views made in the workers, "
        f"{device_s * 1e3:.1f} ms with views made on {device} (data wait + augmentation, 4 batches each); "
        f"using {choice}")
    return choice
