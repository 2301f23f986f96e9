"""Data: sources (image folders, arrays, the embedded ``digits`` sets; image-text pairs from caption
manifests, folders with caption sidecars and tar shards), decoding and the bad-file policy.

>>> from selfsup.data import open_data
>>> splits = open_data("digits")            # or a folder of images, or a .npz file
>>> image = splits.train.get_image(0)       # uint8 tensor (channels, H, W)
>>> pairs = open_data("digits-captions")    # or pairs.csv / .jsonl / .parquet, a folder with .txt, .tar shards
>>> has_text(pairs.train), pairs.train.get_text(0)   # True, ['a handwritten 8', ...]
"""
from selfsup.data.arrays import open_npz
from selfsup.data.badfiles import write_bad_files
from selfsup.data.captions import open_manifest
from selfsup.data.decode import DecodeError, check_image, decode_image
from selfsup.data.digits import make_digits, open_digits
from selfsup.data.digits_captions import open_digits_captions
from selfsup.data.folder import IMAGE_EXTENSIONS, open_folder
from selfsup.data.open import open_data
from selfsup.data.shards import ShardSource, open_shards
from selfsup.data.sources import (
    DATASETS,
    ArraySource,
    DataError,
    DataSplits,
    FolderSource,
    ImageSource,
)
from selfsup.data.splits import holdout_split, stratified_holdout
from selfsup.data.stats import channel_stats
from selfsup.data.text import has_text
from selfsup.registry import import_submodules

import_submodules(__name__)  # every data module registers its datasets: a new one is a new file

__all__ = [
    "ArraySource", "DATASETS", "DataError", "DataSplits", "DecodeError", "FolderSource", "IMAGE_EXTENSIONS",
    "ImageSource", "ShardSource", "channel_stats", "check_image", "decode_image", "has_text", "holdout_split",
    "make_digits", "open_data", "open_digits", "open_digits_captions", "open_folder", "open_manifest", "open_npz",
    "open_shards", "stratified_holdout", "write_bad_files",
]
