"""Held-out splits of a source: a stratified test split of labelled data, a random one of unlabelled image-text
pairs, and :func:`subset`, the new source of the same kind that holds some of a source's samples."""
from __future__ import annotations

import numpy as np

from selfsup.data.sources import ArraySource, DataSplits, FolderSource, ImageSource
from selfsup.data.text import has_text


def subset(source: ImageSource, indices: np.ndarray, name: str) -> ImageSource:
    """A new source of the same kind holding ``indices`` of ``source`` (used for held-out splits), with their
    captions when it has them."""
    indices = np.asarray(indices, dtype=np.int64)
    if hasattr(source, "take"):  # a source defined in a module above this one (tar shards) takes its own
        return source.take(indices, name)
    labels = None if source.labels is None else source.labels[indices]
    captions = None if getattr(source, "captions", None) is None else source.captions.take(indices)
    if isinstance(source, FolderSource):
        folder = FolderSource(
            source.root, [source.relpath(int(i)) for i in indices], channels=source.channels, labels=labels,
            classes=source.classes, sizes=source._sizes[indices], mtimes_ns=source._mtimes[indices],
            ignored_files=0, name=name, captions=captions, raw=source.raw, window=source.window,
            channel_kind=source.channel_kind,
        )
        if folder.captions is None:  # a folder of volumes stays one (its fields say so)
            folder.fields = source.fields
        return folder
    if isinstance(source, ArraySource):  # or a subclass of the same constructor (volumes)
        return type(source)(
            source.images[indices], channels=source.channels, labels=labels, classes=source.classes, name=name,
            mean=getattr(source, "mean", None), std=getattr(source, "std", None), captions=captions,
            window=source.window if source.raw else None, channel_kind=source.channel_kind,
        )
    raise TypeError(f"cannot take a subset of {type(source).__name__}")


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(keep, held_out)`` indices: ``fraction`` of each class held out, deterministic given ``seed``.

    Each class with at least two images keeps at least one and holds out at least one; a class with a single
    image stays in ``keep``. Each class is shuffled with its own generator, so that adding images to one
    class does not change the split of the others."""
    keep, held = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_held = 0
        if len(members) >= 2 and fraction > 0:
            n_held = min(len(members) - 1, max(1, int(round(len(members) * fraction))))
        members = np.random.default_rng([seed, int(c)]).permutation(members)
        held.append(members[:n_held])
        keep.append(members[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def random_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(keep, held_out)`` indices of ``n`` samples: ``fraction`` of them (at least one, never all when
    ``n >= 2``) held out at random, deterministic given ``seed``. For unlabelled image-text pairs."""
    n_held = min(n - 1, max(1, int(round(n * fraction)))) if n >= 2 and fraction > 0 else 0
    order = np.random.default_rng([seed, n]).permutation(n)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def holdout_split(source: ImageSource, fraction: float, seed: int) -> DataSplits:
    """Source without its own test split -> train on ``1 - fraction``, test on ``fraction``: stratified when
    labelled (:func:`stratified_holdout`), at random for unlabelled image-text pairs (:func:`random_holdout`; a
    test split with labels None, for image-text retrieval). Other unlabelled sources (or ``fraction == 0``) ->
    test is None."""
    if (source.labels is None and not has_text(source)) or fraction <= 0 or len(source) < 2:
        return DataSplits(train=source, test=None)
    if source.labels is None:
        keep, held = random_holdout(len(source), fraction, seed)
    else:
        keep, held = stratified_holdout(source.labels, fraction, seed)
    if len(held) == 0:
        return DataSplits(train=source, test=None)
    train = subset(source, keep, f"{source.name}/train")
    test = subset(source, held, f"{source.name}/holdout")
    train.bad_files = list(source.bad_files)
    if isinstance(source, FolderSource):
        train.ignored_files = source.ignored_files
    return DataSplits(train=train, test=test)
