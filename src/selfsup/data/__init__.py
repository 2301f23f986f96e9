"""Data: sources (image folders, arrays, the embedded ``digits`` set), decoding and the bad-file policy.

>>> from selfsup.data import open_data
>>> splits = open_data("digits")            # or a folder of images, or a .npz file
>>> image = splits.train.get_image(0)       # uint8 tensor (channels, H, W)
"""
from selfsup.data.arrays import open_npz
from selfsup.data.decode import DecodeError, check_image, decode_image
from selfsup.data.digits import make_digits, open_digits
from selfsup.data.folder import IMAGE_EXTENSIONS, open_folder
from selfsup.data.open import open_data
from selfsup.data.sources import (
    DATASETS,
    ArraySource,
    DataError,
    DataSplits,
    FolderSource,
    ImageSource,
    channel_stats,
    holdout_split,
    stratified_holdout,
    write_bad_files,
)
from selfsup.registry import import_submodules

import_submodules(__name__)  # every data module registers its datasets: a new one is a new file

__all__ = [
    "ArraySource", "DATASETS", "DataError", "DataSplits", "DecodeError", "FolderSource", "IMAGE_EXTENSIONS",
    "ImageSource", "channel_stats", "check_image", "decode_image", "holdout_split", "make_digits",
    "open_data", "open_digits", "open_folder", "open_npz", "stratified_holdout", "write_bad_files",
]
