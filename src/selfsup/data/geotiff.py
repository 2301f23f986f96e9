"""Write image arrays as GeoTIFF files (``tifffile``, the ``tiff`` extra): 13-band uint16 tiles with a minimal
valid georeference, in a class-folder layout, to exercise the raw readers (:mod:`selfsup.data.readers`) on real
files and to give the domain demo its folder (``selfsup data demo spectral DIR``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from selfsup.data.spectral import SCALE_FACTOR, SPECTRAL_BANDS, SPECTRAL_RGB_BANDS, SPECTRAL_WAVELENGTHS_NM

# GeoKeyDirectory: header (version 1, revision 1.0, 4 keys), then (key, location 0 = value inline, count,
# value) sorted by key: projected model, pixel-is-area, WGS 84 / UTM zone 32N (EPSG 32632), metres.
_GEO_KEYS = (1, 1, 0, 4,
             1024, 0, 1, 1,
             1025, 0, 1, 1,
             3072, 0, 1, 32632,
             3076, 0, 1, 9001)
_PIXEL_METRES = 10.0
_ORIGIN = (500000.0, 5000000.0)  # easting/northing of the first tile's upper-left corner
_TILES_PER_ROW = 100


def write_geotiff_folder(root, images: np.ndarray, labels: np.ndarray, classes, split: str | None = None) -> list[Path]:
    """Write each image as a 13-band uint16 GeoTIFF ``root/[split/]<class>/<index:05d>.tif``; return the paths.

    Bands are stored planar (band-first, as the arrays), with a minimal valid GeoTIFF georeference: 10 m
    pixels in WGS 84 / UTM 32N, image ``i`` a tile of a 100-wide grid (so tiles do not overlap). Also writes
    ``root/bands.json`` (band names, wavelengths, scale factor, RGB bands, classes). Needs ``tifffile``."""
    try:
        import tifffile
    except ImportError as error:  # the core install does not need it
        raise ImportError("writing GeoTIFFs needs tifffile: pip install 'selfsup[tiff]'") from error
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"images must be (n, bands, h, w) with one label each, not {images.shape} and "
                         f"{labels.shape}")
    root = Path(root)
    base = root / split if split else root
    root.mkdir(parents=True, exist_ok=True)
    bands = images.shape[1]
    meta = {"bands": SPECTRAL_BANDS[:bands] if bands == len(SPECTRAL_BANDS) else [f"band{i}" for i in range(bands)],
            "wavelengths_nm": SPECTRAL_WAVELENGTHS_NM if bands == len(SPECTRAL_BANDS) else None,
            "scale_factor": SCALE_FACTOR, "rgb_bands": list(SPECTRAL_RGB_BANDS), "classes": list(classes)}
    (root / "bands.json").write_text(json.dumps(meta, indent=2) + "\n")
    paths = []
    height, width = images.shape[2:]
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = base / str(classes[int(label)])
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{index:05d}.tif"
        row, col = divmod(index, _TILES_PER_ROW)
        x0 = _ORIGIN[0] + col * width * _PIXEL_METRES
        y0 = _ORIGIN[1] - row * height * _PIXEL_METRES
        tags = [(33550, "d", 3, (_PIXEL_METRES, _PIXEL_METRES, 0.0), True),  # ModelPixelScaleTag
                (33922, "d", 6, (0.0, 0.0, 0.0, x0, y0, 0.0), True),  # ModelTiepointTag: pixel (0,0) -> (x0,y0)
                (34735, "H", len(_GEO_KEYS), _GEO_KEYS, True)]  # GeoKeyDirectoryTag
        tifffile.imwrite(path, np.ascontiguousarray(image), photometric="minisblack", planarconfig="separate",
                         extratags=tags)
        paths.append(path)
    return paths
