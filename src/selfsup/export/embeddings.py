"""``selfsup embed``: a backbone's pooled features for every image file under a folder, in one file.

Which files: every file under the folder, recursively (class folders or not), found by the training scan's own
walk (hidden files and ``__MACOSX`` skipped) and pixel-mode choice (:mod:`selfsup.data.folder`): 8-bit pictures
decoded by :func:`selfsup.data.decode.decode_image`, raw domain files (TIFF, 16-bit PNG, ``.npy`` / ``.npz``,
NIfTI, DICOM) read by :mod:`selfsup.data.readers`, checked as training checks them and mapped through their pixel
window (:mod:`selfsup.data.pixels`). Each image goes through the evaluation transform
(:class:`selfsup.views.preprocess.Preprocess`) and the backbone in eval mode. A file that cannot be used (corrupt,
truncated, not an image, empty, another band count or dimensionality than the backbone's, NaN pixels) is skipped
with its reason, never a crash.

Resumable: the sorted file list is fixed at start and cut into chunks of ``chunk_files`` files; each chunk's rows
land atomically in ``<out>.parts/chunk-<k>.npz`` beside ``files.json`` (the list) and ``manifest.json`` (what the
rows depend on: the backbone's weights and the input settings). The same call after an interruption (Ctrl-C, a
kill, a lost machine) skips the finished chunks; it refuses to continue when the folder's files, the backbone or
its input changed (``restart`` starts over). At the end the chunks are merged in file order into ``out``
(:mod:`selfsup.export.embedding_formats`), the bad files listed in ``<out>.bad_files.txt`` (path relative to the
folder, tab, reason) and the parts removed.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from selfsup import __version__
from selfsup.backbones.base import pooled_features
from selfsup.data.decode import DecodeError
from selfsup.data.folder import IMAGE_EXTENSIONS, PIXEL_MODES, needs_raw_readers, split_files, walk_files
from selfsup.data.pixels import PixelWindow
from selfsup.data.readers import (RAW_EXTENSIONS, MissingExtra, check_raw, consistency_problems, probe_raw,
                                  raw_extension, read_raw)
from selfsup.data.sources import DataError, FolderSource, num_workers_for_io
from selfsup.data.stats import DatasetStats, channel_stats, compute_stats, default_stats_file, load_stats
from selfsup.export.embedding_formats import format_of, paths_file
from selfsup.export.embedding_parts import (FolderFiles, ResumeRefused, bad_files_path, chunk_path, merge_parts,
                                            parts_dir, previous_run, start_parts, write_chunk)
from selfsup.fields import VOLUME
from selfsup.views.kinds import KIND_PIPELINES
from selfsup.views.preprocess import Preprocess

# precision -> (autocast dtype or None, dtype of the stored rows)
PRECISIONS = {"fp32": (None, np.float32), "bf16": (torch.bfloat16, np.float32), "fp16": (torch.float16, np.float16)}
DEFAULT_CHUNK_FILES = 2048
_STATS_IMAGES = 2000  # images a pixel window or normalisation is measured on, as training measures them
__all__ = ["EmbedResult", "PRECISIONS", "ResumeRefused", "bad_files_path", "embed_folder", "list_files", "parts_dir"]


def _quiet(message: str) -> None:
    pass


def list_files(root: str | os.PathLike, out: str | os.PathLike, pixels: str, channels: int,
               volume: bool) -> FolderFiles:
    """The files to embed: 8-bit pictures or raw domain files (``pixels``: :data:`PIXEL_MODES`; ``auto`` decides as
    training does, and a backbone of other than 1 or 3 bands, or of volumes, always reads raw). The output and its
    sidecars, when they lie inside ``root``, are not part of it."""
    root = Path(root)
    if pixels not in PIXEL_MODES:
        raise DataError(f"--pixels must be one of {', '.join(PIXEL_MODES)}, not {pixels!r}")
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder; give a folder of images (class sub-folders or not)")
    own = os.path.relpath(Path(out).resolve(), root.resolve())
    walked = [rel for rel in walk_files(root) if rel != own and not rel.startswith(own + ".")]
    must_be_raw = channels not in (1, 3) or volume
    if pixels == "8bit" and must_be_raw:
        raise DataError(f"--pixels 8bit: 8-bit pictures give 1 or 3 channels, but the backbone takes "
                        f"{'volumes' if volume else f'{channels} bands'}; use --pixels raw (or auto)")
    everything = split_files(root, walked, tuple(dict.fromkeys(IMAGE_EXTENSIONS + RAW_EXTENSIONS)))
    raw = pixels == "raw" or must_be_raw or (pixels == "auto" and needs_raw_readers({"all": everything}))
    chosen = split_files(root, walked, RAW_EXTENSIONS if raw else IMAGE_EXTENSIONS)
    if not chosen.paths:
        kind = "raw domain" if raw else "image"
        extensions = ", ".join(RAW_EXTENSIONS if raw else IMAGE_EXTENSIONS)
        raise DataError(f"no {kind} files under {root} (extensions {extensions}, any case); {len(chosen.ignored)} "
                        "other file(s) found. Give a folder of images, class sub-folders or not")
    sizes, mtimes = [], []
    for rel in chosen.paths:
        try:
            stat = os.stat(root / rel)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # a broken link: listed now, a bad file when it is read
            size, mtime = -1, -1
        sizes.append(size)
        mtimes.append(mtime)
    if raw:
        _check_extras(root, chosen.paths)
    return FolderFiles(root, chosen.paths, sizes, mtimes, raw, len(chosen.ignored))


def _check_extras(root: Path, paths: Sequence[str]) -> None:
    """Read one file of each raw extension now, so that a missing optional reader (tifffile, nibabel, pydicom)
    stops the command at start with the extra to install, instead of making every such file a bad file."""
    first: dict[str, str] = {}
    for rel in paths:
        first.setdefault(raw_extension(rel) or "", rel)
    for rel in first.values():
        try:
            read_raw(root / rel)
        except MissingExtra as error:
            raise DataError(str(error)) from None
        except DecodeError:
            pass


@dataclass(frozen=True)
class PixelInput:
    """How a file becomes the backbone's input: raw or 8-bit, bands, image or volume, the pixel window and the dtype
    of the statistics it came from (a file of another dtype is a bad file, as in a training scan), the transform."""

    raw: bool
    channels: int
    volume: bool
    window: PixelWindow | None
    dtype: str | None
    preprocess: Preprocess


class _FileImages(Dataset):
    """``(index, input or None, reason or None)`` of each file: a bad file gives its reason instead of failing."""

    def __init__(self, source: FolderSource, pixel_input: PixelInput):
        self.source, self.pixels = source, pixel_input

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        try:
            return index, self._input(index), None
        except (DecodeError, ValueError, TypeError, RuntimeError, OSError) as error:  # the file, not the program
            return index, None, str(error) or type(error).__name__

    def _input(self, index: int) -> torch.Tensor:
        if any(c in self.source.relpath(index) for c in "\r\n"):
            raise DecodeError("its name holds a line break, which a list of paths cannot hold: rename the file")
        if not self.pixels.raw:
            return self.pixels.preprocess(self.source.get_image(index))
        array = read_raw(self.source.path(index))
        if (problem := check_raw(array)) is not None:
            raise DecodeError(problem)
        if array.shape[0] != self.pixels.channels:
            raise DecodeError(f"{array.shape[0]} bands where the backbone takes {self.pixels.channels}")
        if self.pixels.dtype is not None and array.dtype.name != self.pixels.dtype:
            raise DecodeError(f"{array.dtype.name} where the backbone's data are {self.pixels.dtype} (its pixel "
                              f"statistics); convert it to {self.pixels.dtype}")
        if (array.ndim == 4) != self.pixels.volume:
            raise DecodeError(f"a {'volume' if array.ndim == 4 else '2-D image'} where the backbone takes "
                              f"{'volumes' if self.pixels.volume else '2-D images'}")
        return self.pixels.preprocess(self.pixels.window.apply(array))


def _collate(items):
    good = [(index, image) for index, image, _ in items if image is not None]
    bad = [(index, reason) for index, image, reason in items if image is None]
    images = torch.stack([image for _, image in good]) if good else None
    return torch.tensor([index for index, _ in good], dtype=torch.int64), images, bad


def backbone_digest(backbone: nn.Module) -> str:
    """SHA-256 of the backbone's spec and state-dict tensors (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256(json.dumps(getattr(backbone, "spec", type(backbone).__name__), sort_keys=True).encode())
    for name, value in backbone.state_dict().items():
        h.update(name.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _measured_sample(files: FolderFiles, channels: int) -> FolderSource:
    """The raw files that statistics are measured on, as a training scan keeps them: up to :data:`_STATS_IMAGES`
    (a deterministic sample), readable, with the backbone's band count and the majority's dtype and dimensionality,
    so that a stray float or 3-band file does not set the window of a folder of 4-band uint16 tiles."""
    n = len(files.paths)
    picked = range(n) if n <= _STATS_IMAGES else np.sort(np.random.default_rng(0).choice(n, _STATS_IMAGES, False))

    def probe(index: int):
        try:
            return files.paths[index], probe_raw(files.root / files.paths[index])
        except DecodeError:
            return None

    with ThreadPoolExecutor(num_workers_for_io()) as pool:  # the readers release the GIL
        probed = [found for found in pool.map(probe, picked) if found is not None and found[1].bands == channels]
    problems = consistency_problems(dict(probed))[1]
    keep = [rel for rel, _ in probed if rel not in problems]
    if not keep:
        raise DataError(f"none of the sampled files under {files.root} is a readable {channels}-band image to "
                        "measure the pixel statistics on; give them (--stats)")
    return FolderSource(files.root, keep, channels=channels, raw=True)


def _pixel_input(files: FolderFiles, source: FolderSource, channels: int, volume: bool, image_size: int, mean, std,
                 stats, clip, parts: Path, previous: dict | None, log) -> tuple[PixelInput, DatasetStats | None]:
    """The input settings, measured on the folder where the caller left them open (the normalisation; a raw
    folder's window without ``stats`` or a statistics file beside the data), or taken from the interrupted run's
    parts. Returns the statistics measured now too, which the parts keep for a resume."""
    window, dtype, measured = None, None, None
    sample = functools.cache(lambda: _measured_sample(files, channels) if files.raw else source)  # when needed
    if files.raw:
        kept, beside = parts / "stats.json", default_stats_file(files.root)
        chosen = stats if stats is not None else kept if previous is not None and kept.is_file() else \
            beside if beside.is_file() else None
        if isinstance(chosen, DatasetStats):
            found = chosen
        elif chosen is not None:
            found = load_stats(chosen)
            log(f"pixel window from {chosen}")
        else:
            log(f"computing the pixel statistics of up to {_STATS_IMAGES} files of {files.root} (give the run "
                "directory, or --stats with the backbone's data statistics, for the window it was trained with)")
            found = measured = compute_stats(sample(), max_images=_STATS_IMAGES)
        if found.channels != channels:
            raise DataError(f"the pixel statistics describe {found.channels}-band data, the backbone takes {channels} "
                            "bands; give the statistics of the backbone's data (--stats)")
        window, dtype = found.window(None if clip is None else tuple(clip)), found.dtype
        source.set_window(window)
    if mean is None or std is None:
        if previous is not None:
            mean, std = previous["settings"]["mean"], previous["settings"]["std"]
        else:
            log(f"measuring the normalisation on up to {_STATS_IMAGES} files of {files.root} (the backbone "
                "carries none)")
            if window is not None:
                sample().set_window(window)
            mean, std = channel_stats(sample(), max_images=_STATS_IMAGES)
    return PixelInput(files.raw, channels, volume, window, dtype, Preprocess(image_size, mean, std)), measured


def _settings(backbone: nn.Module, pixel_input: PixelInput, precision: str) -> dict[str, Any]:
    """What the rows depend on besides the files (JSON-normalised, so that a saved copy compares equal)."""
    return json.loads(json.dumps({
        "weights_sha256": backbone_digest(backbone), "spec": getattr(backbone, "spec", None),
        **pixel_input.preprocess.to_json(), "pixels": "raw" if pixel_input.raw else "8bit",
        "window": pixel_input.window.to_json() if pixel_input.window is not None else None,
        "dtype": pixel_input.dtype, "precision": precision}))


def _forward(backbone: nn.Module, images: torch.Tensor, device: torch.device, autocast) -> np.ndarray:
    return pooled_features(backbone, images.to(device, non_blocking=True), autocast).float().cpu().numpy()


def _embed_chunks(backbone, dataset: _FileImages, parts: Path, todo: list[int], chunk_files: int, *, batch_size,
                  num_workers, device, precision, progress, on_chunk, total_chunks) -> None:
    """Embed the chunks ``todo``, each written when its last batch is done."""
    n = len(dataset)
    plan = [(chunk, list(range(start, min(start + batch_size, (chunk + 1) * chunk_files, n))))
            for chunk in todo for start in range(chunk * chunk_files, min((chunk + 1) * chunk_files, n), batch_size)]
    loader = DataLoader(dataset, batch_sampler=[batch for _, batch in plan], num_workers=num_workers,
                        collate_fn=_collate, pin_memory=device.type == "cuda")
    autocast, dtype = PRECISIONS[precision]
    dims = int(getattr(backbone, "num_features", 0))
    done_files = n - sum(min(chunk_files, n - c * chunk_files) for c in todo)
    bar = tqdm(total=n, initial=done_files, unit="file", desc="embed", dynamic_ncols=True,
               disable=None if progress else True)  # None: off when stderr is not a terminal
    rows, bad, finished = [], [], total_chunks - len(todo)
    try:
        with torch.inference_mode():
            for number, ((chunk, batch), (indices, images, bad_items)) in enumerate(zip(plan, loader)):
                if images is not None:
                    vectors = _forward(backbone, images, device, autocast)
                    dims = vectors.shape[1]
                    rows.append((indices.numpy(), vectors.astype(dtype)))
                bad += bad_items
                bar.update(len(batch))
                if number + 1 == len(plan) or plan[number + 1][0] != chunk:
                    write_chunk(chunk_path(parts, chunk), rows, bad, dims, dtype)
                    rows, bad, finished = [], [], finished + 1
                    if on_chunk is not None:
                        on_chunk(finished, total_chunks)
    finally:
        bar.close()


@dataclass
class EmbedResult:
    out: Path
    rows: int
    dims: int
    skipped: int  # bad files
    ignored: int  # files of other extensions
    resumed_chunks: int  # chunks an earlier, interrupted call had finished
    seconds: float

    def summary(self) -> str:
        sidecar = f" (row order in {paths_file(self.out)})" if format_of(self.out).paths_sidecar else ""
        skipped = (f"skipped {self.skipped} bad file(s), listed in {bad_files_path(self.out)}" if self.skipped
                   else "no bad files")
        resumed = f"; continued after {self.resumed_chunks} finished chunk(s)" if self.resumed_chunks else ""
        return (f"wrote {self.rows} rows of {self.dims} dims to {self.out}{sidecar}; {skipped}"
                f"{f'; {self.ignored} file(s) of other extensions ignored' if self.ignored else ''}{resumed} "
                f"({self.seconds:.1f} s)")


def check_image_encoder(backbone: nn.Module) -> None:
    """``selfsup embed`` reads image (and volume) files: an encoder of table rows, point clouds or graphs (a
    field kind with its own pipeline, :mod:`selfsup.views.kinds`) is refused before any file is read."""
    kind = getattr(backbone, "field_kind", "image")
    if kind in KIND_PIPELINES:
        raise ValueError(f"selfsup embed reads folders of image files, and this backbone encodes {kind} data "
                         f"({KIND_PIPELINES.get(kind).data_hint}); score it on such data with `selfsup eval "
                         f"--backbone RUN_DIR --data DATA`, or read its features in Python with "
                         f"selfsup.eval.features.extract_features(backbone, source, ...)")


def embed_folder(backbone: nn.Module, data: str | os.PathLike, out: str | os.PathLike, *, image_size: int,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, pixels: str = "auto",
                 stats: str | os.PathLike | DatasetStats | None = None,
                 clip_percentiles: Sequence[float] | None = (1.0, 99.0), batch_size: int = 256, num_workers: int = 2,
                 device: str | torch.device = "auto", precision: str = "fp32", chunk_files: int = DEFAULT_CHUNK_FILES,
                 restart: bool = False, progress: bool = True, metadata: dict | None = None,
                 on_chunk: Callable[[int, int], None] | None = None,
                 log: Callable[[str], None] = _quiet) -> EmbedResult:
    """Embed every image file under ``data`` into ``out`` (``.npy``, ``.parquet`` or ``.csv``); see the module
    docstring for the files, the bad ones and resuming.

    ``mean`` / ``std`` None: measured on the folder. Raw files take their pixel window from ``stats`` (a statistics
    file or :class:`DatasetStats`), else ``data``'s own statistics file, else statistics measured now, clipped at
    ``clip_percentiles``. ``precision``: :data:`PRECISIONS` (the forward pass under autocast for bf16 / fp16; the
    rows are stored as float16 under fp16, else float32). ``on_chunk(done, total)`` is called after each chunk
    is saved. ``metadata``: more JSON for the parquet schema."""
    started = time.perf_counter()
    check_image_encoder(backbone)
    out = Path(out)
    format_of(out).check()
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    for name, value in (("--batch-size", batch_size), ("--chunk-size", chunk_files)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")
    spec = getattr(backbone, "spec", None) or {}
    channels = int(spec.get("in_channels", 3))
    volume = getattr(backbone, "field_kind", None) == VOLUME.name
    files = list_files(data, out, pixels, channels, volume)
    source = FolderSource(files.root, files.paths, channels=channels, raw=files.raw, sizes=files.sizes,
                          mtimes_ns=files.mtimes)
    parts = parts_dir(out)
    previous = previous_run(parts, out, files, restart)
    pixel_input, measured = _pixel_input(files, source, channels, volume, image_size, mean, std, stats,
                                         clip_percentiles, parts, previous, log)
    settings = _settings(backbone, pixel_input, precision)
    chunk_files = start_parts(parts, files, settings, chunk_files, previous, measured)
    total = math.ceil(len(files.paths) / chunk_files)
    todo = [chunk for chunk in range(total) if not chunk_path(parts, chunk).is_file()]
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if str(device) == "auto" else device)
    backbone.eval().to(device)
    log(f"embedding {len(files.paths)} {'raw' if files.raw else '8-bit'} files of {files.root} at "
        f"{image_size}x{image_size} on {device} ({precision}), {total} chunk(s) of {chunk_files} in {parts}"
        + (f"; {total - len(todo)} finished before" if previous is not None else ""))
    try:
        if todo:
            _embed_chunks(backbone, _FileImages(source, pixel_input), parts, todo, chunk_files, batch_size=batch_size,
                          num_workers=num_workers, device=device, precision=precision, progress=progress,
                          on_chunk=on_chunk, total_chunks=total)
    except KeyboardInterrupt:
        done = sum(chunk_path(parts, chunk).is_file() for chunk in range(total))
        log(f"interrupted: {done} of {total} chunk(s) saved in {parts}; run the same command again to continue")
        raise
    meta = {"data": str(files.root), "selfsup_version": __version__, **settings, **(metadata or {})}
    rows, dims, skipped = merge_parts(out, parts, files, total, int(getattr(backbone, "num_features", 0)),
                                      PRECISIONS[precision][1], meta)
    return EmbedResult(out, rows, dims, skipped, files.ignored, total - len(todo),
                       round(time.perf_counter() - started, 2))
