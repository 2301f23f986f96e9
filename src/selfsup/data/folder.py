"""Open a folder of images: find split and class sub-folders, decode every file once, apply the bad-file policy.

Layouts understood (extensions are matched case-insensitively; hidden files/folders and ``__MACOSX`` are skipped)::

    root/train/{class}/**/*.jpg  root/test/{class}/**/*.jpg   split folders (``val/`` also works as the test split)
    root/{class}/**/*.png                                       labelled; a stratified held-out test split is carved
    root/**/*.tif                                               unlabeled (images directly in root, or mixed)

Raw domain images (``pixels="raw"``, or ``"auto"`` when most of the folder's files are ``.npy`` / ``.npz`` /
NIfTI / DICOM files, or TIFF / PNG files with other than 1 or 3 bands or other than 8 bits): every file of
:data:`selfsup.data.readers.RAW_EXTENSIONS` is read as it is (bands, dtype, range), checked (NaN, inf, odd
dtypes, tiny images) and held to the folder's majority band count, dtype and dimensionality; the files that
differ are bad files with the reason and the fix. The pixel window comes later, from the statistics. A folder
whose majority is 3-D (NIfTI, multi-frame DICOM, 4-D ``.npy``) is a folder of volumes: its sources declare the
field kind ``volume`` (:data:`selfsup.fields.VOLUME_FIELDS`) and train with the 3-D views and encoders.

Captions (image-text data): a ``<stem>.txt`` sidecar beside an image (same folder, same stem; one caption per
line) makes the folder an image-text folder, in any of the layouts above. Then every image needs one: an image
with a missing or empty sidecar is skipped and listed in ``bad_files``. A folder without sidecars is a plain
image folder (other ``.txt`` files are ignored files, as before).
"""
from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selfsup.data.badfiles import check_bad_fraction
from selfsup.data.decode import DecodeError, check_image
from selfsup.data.readers import RAW_EXTENSIONS, MissingExtra, RawInfo, consistency_problems, probe_raw, raw_extension
from selfsup.data.sources import DataError, DataSplits, FolderSource, num_workers_for_io
from selfsup.data.splits import holdout_split
from selfsup.data.text import normalise_captions
from selfsup.fields import VOLUME_FIELDS

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
PIXEL_MODES = ("auto", "8bit", "raw")
_RAW_ONLY = tuple(e for e in RAW_EXTENSIONS if e not in IMAGE_EXTENSIONS)  # .npy .npz .nii .nii.gz .dcm
_PROBED = 16  # files looked at (spread over the folder) to decide between 8-bit and raw
_SKIPPED_DIRS = {"__MACOSX"}
_TRAIN_NAMES = ("train",)
_TEST_NAMES = ("test", "val")


@dataclass
class _Split:
    """Image files found under one split folder (before decoding)."""

    root: Path
    paths: list[str] = field(default_factory=list)  # relative, posix, sorted
    class_of: list[str | None] = field(default_factory=list)  # first-level folder per path, or None
    labelled: bool = False
    ignored: list[str] = field(default_factory=list)  # files skipped for their extension


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in _SKIPPED_DIRS


def _extension(filename: str) -> str:
    return raw_extension(filename) or os.path.splitext(filename)[1].lower()


def walk_files(root: Path) -> list[str]:
    """Every file under ``root`` that is not hidden, as sorted posix paths relative to it (symlink loops and
    folders linked twice are walked once)."""
    files: list[str] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop or a folder linked twice
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        rel_dir = os.path.relpath(dirpath, root)
        files += [filename if rel_dir == "." else f"{Path(rel_dir).as_posix()}/{filename}"
                  for filename in sorted(filenames) if not _hidden(filename)]
    return files


def split_files(root: Path, files: list[str], extensions: tuple[str, ...]) -> _Split:
    """The image files of one split among ``files`` (those with ``extensions``; the others are ignored)."""
    split = _Split(root)
    for rel in files:
        (split.paths if _extension(rel.rsplit("/", 1)[-1]) in extensions else split.ignored).append(rel)
    split.paths.sort()
    split.class_of = [p.split("/", 1)[0] if "/" in p else None for p in split.paths]
    split.labelled = bool(split.paths) and all(c is not None for c in split.class_of)
    return split


def _split_dirs(root: Path) -> tuple[Path, Path | None] | None:
    """``(train_dir, test_dir)`` when ``root`` has split folders; a lone ``train/`` is used as the root."""
    subdirs = {d.name.lower(): d for d in sorted(root.iterdir()) if d.is_dir() and not _hidden(d.name)}
    train = next((subdirs[n] for n in _TRAIN_NAMES if n in subdirs), None)
    if train is None:
        return None
    tests = [subdirs[n] for n in _TEST_NAMES if n in subdirs]
    if tests:
        others = sorted(set(subdirs.values()) - {train, *tests})
        if len(tests) > 1:
            warnings.warn(f"{root}: both {tests[0].name}/ and {tests[1].name}/ exist; using {tests[0].name}/ "
                          f"as the test split and ignoring {tests[1].name}/", stacklevel=4)
        if others:
            warnings.warn(f"{root}: split folders found; ignoring the other folders "
                          f"{', '.join(d.name + '/' for d in others[:5])}", stacklevel=4)
        return train, tests[0]
    loose_files = [f for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
    if len(subdirs) == 1 and not loose_files:  # root/train/... only: the images live in train/
        return train, None
    return None


def check_file(path: str, channels: int) -> tuple[str | None, int, int]:
    """(reason or None, size, mtime_ns) for one image file: decoded once (cheaply), so bad files are found at
    scan time. Also used by the caption manifests (:mod:`selfsup.data.captions`)."""
    try:
        stat = os.stat(path)
    except OSError as e:
        return f"cannot stat file: {e.strerror or e}", 0, 0
    try:
        check_image(path, channels)
    except DecodeError as e:
        return str(e), stat.st_size, stat.st_mtime_ns
    return None, stat.st_size, stat.st_mtime_ns


def sidecar_of(relpath: str) -> str:
    """The caption sidecar of an image: ``a/b.jpg`` -> ``a/b.txt``."""
    return os.path.splitext(relpath)[0] + ".txt"


def _read_sidecar(path: str) -> tuple[str | None, list[str]]:
    """(reason or None, captions) of a sidecar: one caption per non-empty line."""
    name = os.path.basename(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig", errors="replace")  # a BOM or a stray byte is no reason
    except FileNotFoundError:
        return f"no caption: {name} is missing", []
    except OSError as e:
        return f"no caption: cannot read {name}: {e.strerror or e}", []
    captions = normalise_captions(text.splitlines())
    return (None, captions) if captions else (f"no caption: {name} is empty", [])


def _check_pair(path: str, channels: int, sidecar: str | None) -> tuple[str | None, int, int, list[str]]:
    """:func:`check_file`, plus the captions of the image's sidecar when the folder is captioned."""
    reason, size, mtime = check_file(path, channels)
    captions: list[str] = []
    if reason is None and sidecar is not None:
        reason, captions = _read_sidecar(sidecar)
    return reason, size, mtime, captions


def _attach_sidecars(splits: dict[str, _Split]) -> bool:
    """Whether the folder is captioned (some image has a sidecar); if so its sidecars are no ignored files."""
    ignored = {name: set(s.ignored) for name, s in splits.items()}
    if not any(sidecar_of(p) in ignored[name] for name, s in splits.items() for p in s.paths):
        return False
    for s in splits.values():
        sidecars = {sidecar_of(p) for p in s.paths}
        s.ignored = [p for p in s.ignored if p not in sidecars]
    return True


def _no_images_error(root: Path, ignored: list[str]) -> DataError:
    msg = f"no images found under {root}; supported extensions: {', '.join(IMAGE_EXTENSIONS)} (any case)."
    if ignored:
        examples = ", ".join(ignored[:3])
        msg += f" {len(ignored)} file(s) with other extensions were ignored (e.g. {examples})."
    msg += " Point data.source at a folder of images, a .npz file or a registered dataset name."
    return DataError(msg)


def _probe(path: str) -> RawInfo | None:
    try:
        return probe_raw(path)
    except MissingExtra:
        return None  # e.g. TIFFs without tifffile: read by PIL as 8-bit pictures, as before the extra existed
    except DecodeError:
        return None


def _needs_raw(path: str) -> bool:
    """Whether one file needs the raw readers: a raw-only format, or a TIFF / PNG with other than 1 or 3 bands,
    more than 8 bits or more than two dimensions."""
    extension = _extension(path)
    if extension in _RAW_ONLY:
        return True
    if extension not in (".tif", ".tiff", ".png"):
        return False
    info = _probe(path)
    return info is not None and (info.bands not in (1, 3) or info.dtype != "uint8" or info.ndim != 2)


def needs_raw_readers(splits: dict[str, _Split]) -> bool:
    """``pixels="auto"``: raw when most files need the raw readers (:func:`_needs_raw`), judged on up to
    :data:`_PROBED` files spread over the folder. A photo folder with one stray 16-bit PNG or ``.npy`` stays an
    8-bit folder (the odd file is then a bad file with its reason); a folder of GeoTIFFs is raw."""
    paths = [str(s.root / p) for s in splits.values() for p in s.paths]
    if not paths:
        return False
    step = max(1, len(paths) // _PROBED)
    sample = paths[::step][:_PROBED]
    return 2 * sum(map(_needs_raw, sample)) > len(sample)


def _scan_raw(jobs: list[str], channels: int | None) -> tuple[list[tuple[str | None, int, int]], int, int]:
    """Probe every raw file: ([(reason or None, size, mtime)], the folder's band count, its spatial dimensions:
    2 for images, 3 for volumes; files of the other kind are bad files)."""
    def probe(path: str) -> tuple[str | None, int, int, RawInfo | None]:
        try:
            stat = os.stat(path)
        except OSError as e:
            return f"cannot stat file: {e.strerror or e}", 0, 0, None
        try:
            return None, stat.st_size, stat.st_mtime_ns, probe_raw(path)
        except MissingExtra as error:
            raise DataError(str(error)) from None
        except DecodeError as error:
            return str(error), stat.st_size, stat.st_mtime_ns, None

    with ThreadPoolExecutor(num_workers_for_io()) as pool:
        probed = list(pool.map(probe, jobs))
    infos = {path: r[3] for path, r in zip(jobs, probed) if r[3] is not None}
    if not infos:
        return [(r[0], r[1], r[2]) for r in probed], channels or 0, 2
    majority, problems = consistency_problems(infos)
    if channels is not None and channels != majority.bands:
        raise DataError(f"data.channels={channels}, but the images have {majority.bands} bands; leave data.channels "
                        f"unset (it follows the data) or set it to {majority.bands}")
    results = [(r[0] or problems.get(path), r[1], r[2]) for path, r in zip(jobs, probed)]
    return results, majority.bands, majority.ndim


def open_folder(root: str | os.PathLike, channels: int | None = None, max_bad_fraction: float = 0.1, seed: int = 0,
                holdout_fraction: float = 0.2, pixels: str = "auto") -> DataSplits:
    """Open an image folder (layouts in the module docstring). ``channels``: 1 or 3 for 8-bit pictures (None:
    3); raw data keeps its own band count (None, or that count). ``pixels``: ``"8bit"``, ``"raw"`` or
    ``"auto"`` (:data:`PIXEL_MODES`)."""
    root = Path(root)
    if pixels not in PIXEL_MODES:
        raise DataError(f"data.pixels must be one of {', '.join(PIXEL_MODES)}, not {pixels!r}")
    dirs = _split_dirs(root)
    walk_extensions = IMAGE_EXTENSIONS if pixels == "8bit" else RAW_EXTENSIONS if pixels == "raw" else \
        tuple(dict.fromkeys(IMAGE_EXTENSIONS + RAW_EXTENSIONS))
    split_roots = {"train": root} if dirs is None else {"train": dirs[0], **({"test": dirs[1]} if dirs[1] else {})}
    files = {name: walk_files(path) for name, path in split_roots.items()}  # walked once, whatever the mode
    splits = {name: split_files(split_roots[name], found, walk_extensions) for name, found in files.items()}
    raw = pixels == "raw" or (pixels == "auto" and needs_raw_readers(splits))
    if pixels == "auto":  # the files of the mode chosen
        chosen = RAW_EXTENSIONS if raw else IMAGE_EXTENSIONS
        splits = {name: split_files(split_roots[name], found, chosen) for name, found in files.items()}
    if not raw and channels not in (None, 1, 3):
        raise DataError(
            f"{root}: 8-bit image files give 1 (gray) or 3 (RGB) channels, not channels={channels}; use channels 1 "
            "or 3, data.pixels=raw for multi-band files (TIFF, .npy, .npz per image), or a .npz of arrays"
        )
    if not raw:
        channels = channels or 3
    ignored = [str(s.root / p) for s in splits.values() for p in s.ignored]
    if not any(s.paths for s in splits.values()):
        raise _no_images_error(root, ignored)
    if not splits["train"].paths:
        raise _no_images_error(splits["train"].root, [str(splits["train"].root / p) for p in splits["train"].ignored])
    captioned = _attach_sidecars(splits)
    ignored = [str(s.root / p) for s in splits.values() for p in s.ignored]

    # Decode every file (and read its caption) once so bad files are found now, not halfway through a run.
    jobs = [(str(s.root / p), str(s.root / sidecar_of(p)) if captioned else None)
            for s in splits.values() for p in s.paths]
    spatial_dims = 2
    if raw:
        scanned, channels, spatial_dims = _scan_raw([job[0] for job in jobs], channels)
        results = []
        for (image, sidecar), (reason, size, mtime) in zip(jobs, scanned):
            captions: list[str] = []
            if reason is None and sidecar is not None:
                reason, captions = _read_sidecar(sidecar)
            results.append((reason, size, mtime, captions))
    else:
        with ThreadPoolExecutor(num_workers_for_io()) as pool:
            results = list(pool.map(lambda job: _check_pair(job[0], channels, job[1]), jobs))
    bad = [(job[0], result[0]) for job, result in zip(jobs, results) if result[0] is not None]
    log.info("scanned %d image files under %s: %d bad, %d other files ignored", len(jobs), root, len(bad),
             len(ignored))
    check_bad_fraction(bad, len(jobs), f"under {root}", max_bad_fraction,
                       problem="could not be decoded or have no caption" if captioned else "could not be decoded")

    # Class names shared by all labelled splits, so that label i means the same class everywhere.
    classes = sorted({c for s in splits.values() if s.labelled for c in s.class_of})
    class_index = {c: i for i, c in enumerate(classes)}
    sources: dict[str, FolderSource] = {}
    bad_by_split: dict[str, list[tuple[str, str]]] = {}
    offset = 0
    for name, s in splits.items():
        res = results[offset:offset + len(s.paths)]
        offset += len(s.paths)
        keep = [i for i, result in enumerate(res) if result[0] is None]
        bad_by_split[name] = [(str(s.root / s.paths[i]), result[0]) for i, result in enumerate(res)
                              if result[0] is not None]
        if not keep:
            warnings.warn(f"{s.root}: no decodable images in the {name} split; it is not used", stacklevel=3)
            continue
        labels = np.array([class_index[s.class_of[i]] for i in keep], np.int64) if s.labelled else None
        sources[name] = FolderSource(
            s.root, [s.paths[i] for i in keep], channels=channels, labels=labels,
            classes=classes if s.labelled else None, sizes=[res[i][1] for i in keep],
            mtimes_ns=[res[i][2] for i in keep], bad_files=bad_by_split[name], ignored_files=len(s.ignored),
            name=f"{root.name}/{name}" if dirs is not None else root.name,
            captions=[res[i][3] for i in keep] if captioned else None, raw=raw,
        )
        if spatial_dims == 3 and not captioned:  # a folder of volumes: views, masks and encoders of the kind volume
            sources[name].fields = VOLUME_FIELDS
    if "train" not in sources:
        raise DataError(f"no decodable images in the train split {splits['train'].root}; see the bad files listed "
                        "by write_bad_files / bad_files.txt")
    train, test = sources["train"], sources.get("test")
    if "test" not in splits:
        return holdout_split(train, holdout_fraction, seed)
    # Unlabelled captioned test pairs serve image-text retrieval, when the train split is unlabelled too.
    if test is not None and test.labels is None and not (captioned and train.labels is None):
        warnings.warn(f"{splits['test'].root}: the test split has no class folders, so it cannot be used for "
                      "evaluation and is not used", stacklevel=3)
        test = None
    if test is None:  # keep the record of its bad files with the split that is used
        train.bad_files += bad_by_split["test"]
    return DataSplits(train=train, test=test)
