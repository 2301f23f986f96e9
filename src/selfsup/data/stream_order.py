"""The order in which streamed tar shards are read: a pure function of the shard counts and (seed, epoch).

Streaming (webdataset's model, for shards behind URLs) reads each shard from its start to its end, so the
order has to respect shards: per epoch

1. the shards are permuted from (seed, epoch) and dealt to ``world x streams`` readers (rank r, stream s takes
   every ``world x streams``-th shard of the permutation, from position ``r x streams + s``): each shard is
   read by exactly one stream of one rank, so coverage is disjoint and complete;
2. within a shard a shuffle buffer of ``buffer`` samples, seeded from (seed, epoch, shard), picks the order
   (a buffer as large as the shard is a full permutation); the buffer restarts at every shard, so a resumed
   stream starts reading at the start of its current shard, never earlier;
3. each stream's samples are cut into batches, and a rank's batches are the streams' batches in turn (batch b
   of an epoch is stream ``b mod streams``'s, while every stream has batches left), so that DataLoader worker
   w, which the DataLoader hands every ``workers``-th batch, reads one stream's shards only when
   ``streams == workers``.

Because the order needs only the counts, not the data, a resumed run recomputes it and skips the batches
its checkpoint says were consumed (``start_batch``): it sees exactly the samples it had not seen in that
epoch. In training (``drop_last``) every rank takes the same number of batches per epoch: each stream's last
incomplete batch is dropped, and ranks stop at the smallest rank's count (the samples left out are logged).
Views keep their randomness from (seed, epoch, global sample index), as for every other source.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import Sampler


def shard_assignment(num_shards: int, seed: int, epoch: int, world: int, streams: int) -> list[list[list[int]]]:
    """``[rank][stream]`` -> the shards that stream reads in epoch ``epoch``, in reading order."""
    order = np.random.default_rng([seed, epoch, 0x5A4D]).permutation(num_shards)
    readers = world * streams
    return [[order[r * streams + s::readers].tolist() for s in range(streams)] for r in range(world)]


def buffered_order(count: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """The order a shuffle buffer of ``buffer`` samples emits a shard's ``count`` samples in (positions in the
    shard): fill the buffer, then each new sample replaces a random slot whose sample is emitted; drain at the
    end. A reader holds at most ``buffer`` samples it has read but not yet emitted."""
    if count <= buffer:
        return rng.permutation(count)
    slots = list(range(buffer))
    out = np.empty(count, np.int64)
    for t, j in enumerate(rng.integers(0, buffer, size=count - buffer).tolist()):
        out[t] = slots[j]
        slots[j] = buffer + t
    out[count - buffer:] = np.asarray(slots, np.int64)[rng.permutation(buffer)]
    return out


def shard_order(shard: int, count: int, seed: int, epoch: int, buffer: int) -> np.ndarray:
    """Shard ``shard``'s positions in its epoch-``epoch`` order (its own generator: (seed, epoch, shard))."""
    return buffered_order(count, buffer, np.random.default_rng([seed, epoch, shard, 0xB0F]))


def interleave(batches_per_stream: Sequence[int]) -> np.ndarray:
    """Which stream each batch of a rank's epoch comes from: the streams in turn, skipping the exhausted ones."""
    counts = np.asarray(batches_per_stream, np.int64)
    rounds = np.arange(int(counts.max()) if len(counts) else 0)
    # Batch j of stream s is in round j; within a round the streams go in order.
    has = rounds[:, None] < counts[None, :]
    return np.nonzero(has)[1].astype(np.int64)


class StreamOrder:
    """The epoch orders of a shard set (``counts`` samples per shard, global index = the shard's offset +
    the sample's position in it) for ``world`` ranks of ``streams`` streams each, batches of ``batch_size``."""

    def __init__(self, counts: Sequence[int], batch_size: int, seed: int, world: int = 1, streams: int = 1,
                 buffer: int = 1000, drop_last: bool = True):
        self.counts = np.asarray(counts, np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        if len(self.counts) < world:
            raise ValueError(f"{len(self.counts)} shard(s) for {world} processes: every process reads whole shards, "
                             "so write at least as many shards as processes (selfsup data shard --shard-size)")
        if buffer < 1 or batch_size < 1 or streams < 1:
            raise ValueError(f"the shuffle buffer ({buffer}), batch size ({batch_size}) and streams ({streams}) "
                             "must be positive")
        self.batch_size, self.seed, self.world, self.streams = batch_size, seed, world, streams
        self.buffer, self.drop_last = buffer, drop_last
        self._batch_counts: dict[int, list[list[int]]] = {}

    def _stream_batches(self, epoch: int) -> list[list[int]]:
        """``[rank][stream]`` -> that stream's batch count in ``epoch`` (from the counts alone; kept per epoch,
        since the loop asks for the positions after every step)."""
        if epoch not in self._batch_counts:
            b, split = self.batch_size, np.ceil if not self.drop_last else np.floor
            self._batch_counts = {epoch: [[int(split(self.counts[shards].sum() / b)) if shards else 0 for shards in rank]
                                          for rank in shard_assignment(len(self.counts), self.seed, epoch, self.world,
                                                                       self.streams)]}
        return self._batch_counts[epoch]

    def batches(self, epoch: int) -> int:
        """Batches every rank takes in ``epoch`` (training: the smallest rank's count; else this rank's own)."""
        per_rank = [sum(streams) for streams in self._stream_batches(epoch)]
        if min(per_rank) == 0:
            raise ValueError(f"a process gets fewer than {self.batch_size} samples in epoch {epoch} (shards of "
                             f"{self.counts.min()}..{self.counts.max()} samples): lower train.batch_size, or write "
                             "more, smaller shards")
        return min(per_rank)

    def stream_of_batch(self, epoch: int, rank: int) -> np.ndarray:
        """The stream of each batch of ``rank`` in ``epoch`` (truncated to the common count in training)."""
        order = interleave(self._stream_batches(epoch)[rank])
        return order[:self.batches(epoch)] if self.drop_last else order

    def positions(self, epoch: int, consumed_batches: int) -> list[list[int]]:
        """``[rank][stream]`` -> samples that stream has delivered after ``consumed_batches`` batches of ``epoch``
        (what a checkpoint records of the stream position)."""
        return [(np.bincount(self.stream_of_batch(epoch, r)[:consumed_batches], minlength=self.streams)
                 * self.batch_size).tolist() for r in range(self.world)]

    def stream_samples(self, epoch: int, rank: int, stream: int) -> np.ndarray:
        """Every global index stream ``stream`` of ``rank`` reads in ``epoch``, in order."""
        shards = shard_assignment(len(self.counts), self.seed, epoch, self.world, self.streams)[rank][stream]
        parts = [self.offsets[j] + shard_order(j, int(self.counts[j]), self.seed, epoch, self.buffer) for j in shards]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def rank_batches(self, epoch: int, rank: int) -> list[np.ndarray]:
        """``rank``'s batches of ``epoch`` (arrays of global indices), in the order they are trained on."""
        b = self.batch_size
        per_stream = [self.stream_samples(epoch, rank, s) for s in range(self.streams)]
        cursors = [0] * self.streams
        out = []
        for s in self.stream_of_batch(epoch, rank).tolist():
            out.append(per_stream[s][cursors[s]:cursors[s] + b])
            cursors[s] += b
        return out


class StreamBatchSampler(Sampler):
    """Yields this rank's batches of ``(epoch, index)`` keys in :class:`StreamOrder`; ``set_epoch(epoch,
    start_batch)`` as :class:`selfsup.views.dataset.EpochBatchSampler` (a resumed run skips ``start_batch``)."""

    def __init__(self, order: StreamOrder, rank: int = 0):
        self.order, self.rank = order, rank
        self.batch_size, self.world_size = order.batch_size, order.world
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        """The batches of epoch 0, the nominal epoch (later epochs may differ by a few batches: other shards)."""
        return self.order.batches(0)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.order.batches(self.epoch) - self.start_batch if self.order.drop_last else \
            len(self.order.stream_of_batch(self.epoch, self.rank)) - self.start_batch

    def __iter__(self):
        for batch in self.order.rank_batches(self.epoch, self.rank)[self.start_batch:]:
            yield [(self.epoch, int(i)) for i in batch]
