"""``spectral``: an embedded, *synthetic* multispectral image set (and a toy 3-D volume set), no download.

Nothing here is real satellite data. :func:`generate_spectral` draws 32x32 images with the 13 bands of a
Sentinel-2-like sensor (:data:`SPECTRAL_BANDS`, centre wavelengths in :data:`SPECTRAL_WAVELENGTHS_NM`) as uint16
reflectance x 10,000 (scale factor 1e-4, as Sentinel-2 L2A), deterministically from a seed, with numpy only,
in about a second per few thousand images. It is the domain demo of the library, so it is built to be hard in
the way real scenes are hard, not to be pretty:

- **Materials** are smooth reflectance curves over wavelength (:data:`MATERIALS`): water low and falling
  towards the infrared, vegetation with the red edge between B4 and B8, snow bright in the visible and dark in
  the SWIR (B11, B12), soils and sand rising slowly, concrete and asphalt flat.
- **A class** (:data:`SPECTRAL_CLASSES`) is a pair of materials *and* a spatial structure: cropland is crop
  and soil in oriented stripes (two parcels), orchard is the same crop and soil as a lattice of crowns, forest
  is two tree types under crown shading, urban is concrete blocks with asphalt streets and building shadows,
  desert is sand and soil in warped dune ripples, bare soil the same sand and soil as clods, and so on. Classes
  share materials on purpose (cropland/orchard, desert/bare soil, grassland/wetland share one or both), and
  the mixing fractions of a pair overlap, so per-image band means cannot tell all classes apart: the texture
  has to be seen.
- **Nuisance per image**, none of which carries the class: every material's curve gets its own brightness and
  tilt; a random third, *background* material (any of them) covers part of the image and mixes into every
  pixel a little; illumination/atmosphere multiplies the bands by a smooth curve (within +-20%); additive haze
  falls off with wavelength (strongest in B1/B2); water vapour absorbs B9 and almost all of B10 (the cirrus
  band); texture phase, orientation and scale are random; sensor noise grows with the signal; and some images
  carry bright outliers (small clouds, up to the 16,000 ceiling, also bright in B10, and single glint
  pixels), a few percent of all pixels, so that percentile clipping matters.

Measured with 5,000 train / 1,000 test images (``spectral_splits_arrays()``), chance 10%: raw-pixel kNN (k=20,
cosine, on per-feature standardized flattened pixels) 46%; a logistic regression on the 13 per-image band means
68% (it confuses the pairs that share materials: cropland/orchard, desert/bare soil); the same on band means
and stds 75%; with a handful of hand-made texture features (radial power spectrum and orientation of B4 and
B8) added, 88%. A representation that sees texture has room.

Registered as the dataset ``spectral`` (5,000 train, 1,000 test, raw uint16 with the pixel window and
normalisation of its train statistics, channel kind ``bands``). :func:`selfsup.data.geotiff.write_geotiff_folder`
writes it as GeoTIFF files; :mod:`selfsup.data.volumes` is its 3-D counterpart.
"""
from __future__ import annotations

import functools

import numpy as np

from selfsup.data.pixels import PixelWindow
from selfsup.data.sources import DATASETS, ArraySource, DataError, DataSplits
from selfsup.data.stats import DatasetStats, compute_stats

SIZE = 32
SCALE_FACTOR = 1e-4  # stored uint16 value x SCALE_FACTOR = reflectance, as Sentinel-2 L2A
MAX_VALUE = 16000  # the ceiling outliers saturate at

SPECTRAL_BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
#: Approximate band centres (nm) of the Sentinel-2 MSI.
SPECTRAL_WAVELENGTHS_NM = [442.7, 492.4, 559.8, 664.6, 704.1, 740.5, 782.8, 832.8, 864.7, 945.1, 1373.5,
                           1613.7, 2202.4]
SPECTRAL_RGB_BANDS = (3, 2, 1)  # B4, B3, B2: red, green, blue for display

_WL = np.asarray(SPECTRAL_WAVELENGTHS_NM)
# Wavelength position in [-1, 1] on a log axis: the variable of the smooth per-image curves over bands.
_Z = (2 * (np.log(_WL) - np.log(_WL[0])) / (np.log(_WL[-1]) - np.log(_WL[0])) - 1).astype(np.float32)
_B9, _B10 = SPECTRAL_BANDS.index("B9"), SPECTRAL_BANDS.index("B10")


def _curve(points: dict[float, float]) -> np.ndarray:
    """A reflectance curve given at a few wavelengths (nm), read at the band centres (linear in between)."""
    wl, value = zip(*sorted(points.items()))
    return np.interp(_WL, wl, value).astype(np.float32)


#: Surface reflectance (0..1) of each material at the band centres. Rough shapes of textbook spectra (B10 is
#: the surface value before the atmosphere's water vapour absorbs it).
MATERIALS: dict[str, np.ndarray] = {
    "water_clear": _curve({440: .065, 490: .058, 560: .042, 665: .020, 705: .015, 740: .010, 780: .008,
                           833: .006, 865: .005, 945: .004, 1375: .002, 1610: .002, 2200: .001}),
    "water_turbid": _curve({440: .070, 490: .082, 560: .105, 665: .085, 705: .065, 740: .045, 780: .036,
                            833: .030, 865: .026, 945: .020, 1375: .012, 1610: .010, 2200: .005}),
    "crop": _curve({440: .030, 490: .040, 560: .095, 665: .040, 705: .120, 740: .300, 780: .420, 833: .450,
                    865: .460, 945: .440, 1375: .350, 1610: .250, 2200: .120}),
    "conifer": _curve({440: .020, 490: .028, 560: .050, 665: .025, 705: .070, 740: .180, 780: .250, 833: .270,
                       865: .280, 945: .270, 1375: .200, 1610: .140, 2200: .060}),
    "grass": _curve({440: .040, 490: .050, 560: .090, 665: .060, 705: .130, 740: .250, 780: .320, 833: .340,
                     865: .350, 945: .340, 1375: .300, 1610: .300, 2200: .180}),
    "dry_grass": _curve({440: .060, 490: .080, 560: .120, 665: .150, 705: .180, 740: .210, 780: .230,
                         833: .250, 865: .260, 945: .260, 1375: .300, 1610: .350, 2200: .250}),
    "soil": _curve({440: .080, 490: .100, 560: .140, 665: .190, 705: .210, 740: .230, 780: .245, 833: .260,
                    865: .270, 945: .280, 1375: .320, 1610: .350, 2200: .300}),
    "sand": _curve({440: .180, 490: .220, 560: .300, 665: .380, 705: .400, 740: .420, 780: .435, 833: .450,
                    865: .460, 945: .470, 1375: .520, 1610: .550, 2200: .480}),
    "concrete": _curve({440: .200, 490: .220, 560: .240, 665: .260, 833: .280, 1610: .300, 2200: .270}),
    "asphalt": _curve({440: .060, 490: .070, 560: .080, 665: .090, 833: .110, 1610: .140, 2200: .130}),
    "snow": _curve({440: .820, 490: .830, 560: .820, 665: .790, 705: .770, 740: .750, 780: .730, 833: .710,
                    865: .690, 945: .560, 1375: .200, 1610: .050, 2200: .030}),
    "rock": _curve({440: .120, 490: .135, 560: .160, 665: .180, 833: .220, 1610: .280, 2200: .240}),
}
_MATERIAL_NAMES = list(MATERIALS)
_MATERIAL_TABLE = np.stack([MATERIALS[m] for m in _MATERIAL_NAMES])
# Clouds: bright, nearly flat, a little bluer, and (unlike the surface) bright in the cirrus band B10.
_CLOUD = _curve({440: 1.00, 665: .95, 865: .92, 1375: .55, 1610: .75, 2200: .55})

#: The 10 classes: (name, material A, material B, structure). See :func:`_structure` for the structures.
_CLASS_SPECS = [
    ("water", "water_clear", "water_turbid", "currents"),
    ("forest", "conifer", "crop", "canopy"),
    ("cropland", "crop", "soil", "fields"),
    ("orchard", "crop", "soil", "lattice"),
    ("grassland", "grass", "dry_grass", "meadow"),
    ("wetland", "grass", "water_turbid", "marsh"),
    ("urban", "concrete", "asphalt", "blocks"),
    ("bare_soil", "sand", "soil", "clods"),
    ("desert", "sand", "soil", "dunes"),
    ("snow", "snow", "rock", "snowfield"),
]
SPECTRAL_CLASSES: list[str] = [spec[0] for spec in _CLASS_SPECS]

_CHUNK = 512  # images generated at once: bounds the float32 working memory (~30 MB per array)
_Y, _X = (np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) - (SIZE - 1) / 2)  # pixel centres, origin mid-image
_FY = np.fft.fftfreq(SIZE)[:, None]
_FX = np.fft.rfftfreq(SIZE)[None, :]
_F2 = (_FX ** 2 + _FY ** 2).astype(np.float32)  # squared spatial frequency (cycles/pixel) of rfft2's bins


# ----------------------------------------------------------------------------------------------- 2-D fields
def _u(rng: np.random.Generator, m: int, lo: float, hi: float) -> np.ndarray:
    """m uniform draws, shaped (m, 1, 1) to broadcast over an image."""
    return rng.uniform(lo, hi, m).astype(np.float32)[:, None, None]


def _field(rng: np.random.Generator, m: int, sigma: np.ndarray) -> np.ndarray:
    """(m, S, S) smooth random fields, zero mean and unit std per image: white noise blurred by a Gaussian of
    ``sigma`` pixels (per image, shape (m, 1, 1)), in the Fourier domain (so periodic, and fast)."""
    spectrum = np.fft.rfft2(rng.standard_normal((m, SIZE, SIZE), dtype=np.float32))
    spectrum *= np.exp(-2 * np.pi ** 2 * sigma ** 2 * _F2)
    field = np.fft.irfft2(spectrum, s=(SIZE, SIZE)).astype(np.float32)
    field -= field.mean((1, 2), keepdims=True)
    field /= field.std((1, 2), keepdims=True) + 1e-6
    return field


def _cover(field: np.ndarray, fraction: np.ndarray, edge: float = 0.15) -> np.ndarray:
    """Soft mask in [0, 1] covering about ``fraction`` of each image: the field above its own quantile, with
    edges ``edge`` (in field std) wide, so region boundaries are anti-aliased like mixed pixels."""
    flat = np.sort(field.reshape(len(field), -1), axis=1)
    k = np.clip(((1 - fraction.reshape(-1)) * flat.shape[1]).astype(int), 0, flat.shape[1] - 1)
    level = flat[np.arange(len(field)), k][:, None, None]
    return np.clip((field - level) / edge + 0.5, 0, 1)


def _rotated(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) rotated by a random angle per image."""
    theta = _u(rng, m, 0, np.pi)
    cos, sin = np.cos(theta), np.sin(theta)
    return _X * cos + _Y * sin, -_X * sin + _Y * cos


def _stripes(u: np.ndarray, period: np.ndarray, phase: np.ndarray, duty: np.ndarray, sharp: float) -> np.ndarray:
    """Soft stripes across ``u``: 1 on a ``duty`` fraction of each period (cos above cos(pi duty))."""
    wave = np.cos(2 * np.pi * u / period + phase)
    return np.clip((wave - np.cos(np.pi * duty)) * sharp + 0.5, 0, 1)


def _structure(kind: str, rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """m images of one structure: (abundance of material A in [0, 1], shading factor), both (m, S, S).

    The fraction of material A is drawn from the same range (0.3-0.75) for the classes that share materials,
    so that only the arrangement tells them apart."""
    ones = np.ones((m, SIZE, SIZE), np.float32)
    if kind == "fields":  # two parcels, each ploughed/planted in stripes at its own angle and period
        side = _cover(_field(rng, m, _u(rng, m, 8, 12)), _u(rng, m, 0.3, 0.7), edge=0.05)
        duty = _u(rng, m, 0.3, 0.75)
        parcels = []
        for _ in range(2):
            u, _v = _rotated(rng, m)
            parcels.append(_stripes(u, _u(rng, m, 3, 7), _u(rng, m, 0, 2 * np.pi), duty, 2.0))
        return side * parcels[0] + (1 - side) * parcels[1], ones
    if kind == "lattice":  # tree crowns on a rotated square grid, a little jittered, over bare soil
        u, v = _rotated(rng, m)
        period = _u(rng, m, 4, 7)
        u = u + 0.6 * _field(rng, m, _u(rng, m, 3, 5))
        du = (u / period + _u(rng, m, 0, 1)) % 1 - 0.5
        dv = (v / period + _u(rng, m, 0, 1)) % 1 - 0.5
        r = np.sqrt(du ** 2 + dv ** 2) * period
        radius = period * np.sqrt(_u(rng, m, 0.3, 0.75) / np.pi)  # crown area = the drawn fraction
        crowns = np.clip((radius - r) * 1.5 + 0.5, 0, 1)
        shade = 1 - 0.25 * np.clip((r - radius) * 1.5 + 0.5, 0, 1) * np.clip(du * period, 0, 1)  # crown shadows
        return crowns, shade
    if kind == "canopy":  # two tree types in stands, under fine crown shading (bright tops, dark gaps)
        stands = _cover(_field(rng, m, _u(rng, m, 3, 6)), _u(rng, m, 0.2, 0.8), edge=0.4)
        crowns = _field(rng, m, _u(rng, m, 0.8, 1.5))
        return stands, 0.75 + 0.25 * np.tanh(1.2 * crowns)
    if kind == "meadow":  # green and dry grass in gradual patches
        patches = _field(rng, m, _u(rng, m, 2.5, 6))
        return np.clip(0.5 + 0.35 * patches + _u(rng, m, -0.25, 0.25), 0, 1), ones
    if kind == "marsh":  # open water in irregular pools within grass
        pools = _cover(_field(rng, m, _u(rng, m, 1.5, 3.5)), _u(rng, m, 0.25, 0.6), edge=0.3)
        return 1 - pools, ones
    if kind == "blocks":  # a rotated street grid; each block a roof mix, shadowed on one side
        u, v = _rotated(rng, m)
        bu, bv = _u(rng, m, 4, 9), _u(rng, m, 4, 9)
        cu, cv = u / bu + _u(rng, m, 0, 1), v / bv + _u(rng, m, 0, 1)
        fu, fv = (cu % 1) * bu, (cv % 1) * bv  # position inside the block, pixels
        street = _u(rng, m, 0.8, 2.0)
        roof = np.clip(fu - street, 0, 1) * np.clip(fv - street, 0, 1)
        # A roof level per block from a small random table, indexed by the block's integer coordinates.
        table = rng.uniform(0.35, 1.0, (m, 8, 8)).astype(np.float32)
        iu, iv = np.floor(cu).astype(int) % 8, np.floor(cv).astype(int) % 8
        level = np.take_along_axis(table.reshape(m, 64), (iu * 8 + iv).reshape(m, -1), 1).reshape(m, SIZE, SIZE)
        shadow = np.clip(1.5 - np.abs(fu - street - 0.5), 0, 1) * (fv > street)  # just past the street edge
        return roof * level, 1 - 0.35 * shadow
    if kind == "clods":  # bare ground: sand and soil in small lumps
        return _cover(_field(rng, m, _u(rng, m, 0.7, 1.5)), _u(rng, m, 0.3, 0.75), edge=0.5), ones
    if kind == "dunes":  # sand and soil in ripples whose crests wander, lit on one flank
        u, _v = _rotated(rng, m)
        period, phase = _u(rng, m, 4, 9), _u(rng, m, 0, 2 * np.pi)
        u = u + _u(rng, m, 0.5, 2.0) * _field(rng, m, _u(rng, m, 4, 8))
        ripples = _stripes(u, period, phase, _u(rng, m, 0.3, 0.75), 0.8)
        return ripples, 1 + 0.15 * np.sin(2 * np.pi * u / period + phase)
    if kind == "snowfield":  # snow with rock outcrops, under broad terrain shading
        rock = _cover(_field(rng, m, _u(rng, m, 1.2, 3)), _u(rng, m, 0.1, 0.45), edge=0.3)
        return 1 - rock, 0.8 + 0.15 * np.tanh(_field(rng, m, _u(rng, m, 5, 10)))
    if kind == "currents":  # clear and sediment-laden water in broad swirls
        swirl = _field(rng, m, _u(rng, m, 3, 8))
        return np.clip(0.5 + 0.4 * swirl + _u(rng, m, -0.3, 0.3), 0, 1), 1 + 0.03 * _field(rng, m, _u(rng, m, 1, 2))
    raise ValueError(f"unknown structure {kind!r}")


# ------------------------------------------------------------------------------------------------ spectral
def _perturbed(rng: np.random.Generator, material: np.ndarray) -> np.ndarray:
    """(m, 13) per-image copies of material curves (m, 13): own brightness (+-15%) and a gentle spectral tilt,
    so that a material's exact curve identifies nothing."""
    m = len(material)
    bright = rng.uniform(0.85, 1.15, (m, 1)).astype(np.float32)
    tilt = rng.uniform(-0.08, 0.08, (m, 1)).astype(np.float32)
    return material * bright * (1 + tilt * _Z)


def _render_chunk(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """uint16 (m, 13, S, S) images for ``labels`` (class indices). (The order of the draws from ``rng`` is the
    images' identity: changing it changes every generated dataset.)"""
    m = len(labels)
    abundance = np.empty((m, SIZE, SIZE), np.float32)
    shade = np.empty((m, SIZE, SIZE), np.float32)
    material_a = np.empty(m, np.int64)
    material_b = np.empty(m, np.int64)
    for c, (_name, a, b, kind) in enumerate(_CLASS_SPECS):
        where = np.flatnonzero(labels == c)
        if len(where):
            abundance[where], shade[where] = _structure(kind, rng, len(where))
            material_a[where], material_b[where] = _MATERIAL_NAMES.index(a), _MATERIAL_NAMES.index(b)
    spec_a = _perturbed(rng, _MATERIAL_TABLE[material_a])[:, :, None, None]
    spec_b = _perturbed(rng, _MATERIAL_TABLE[material_b])[:, :, None, None]
    # Background: any material, covering up to 40% of the image in a smooth region, plus up to 15% of it
    # mixed into every pixel (what a 10-60 m pixel sees of its neighbourhood).
    spec_c = _perturbed(rng, _MATERIAL_TABLE[rng.integers(0, len(_MATERIAL_NAMES), m)])[:, :, None, None]
    background = _cover(_field(rng, m, _u(rng, m, 2, 6)), _u(rng, m, 0.0, 0.4), edge=0.3)
    background = np.maximum(background, _u(rng, m, 0.0, 0.15))[:, None]
    t = abundance[:, None]
    surface = (spec_b + t * (spec_a - spec_b)) * (1 - background) + spec_c * background
    surface *= shade[:, None]

    # Atmosphere, per image: a smooth multiplicative curve over bands within +-20% (illumination angle,
    # transmission), water vapour absorption in B9 and B10, and haze adding most at short wavelengths.
    z = _Z[None]
    gain = 1 + rng.uniform(-0.12, 0.12, (m, 1)) + rng.uniform(-0.05, 0.05, (m, 1)) * z \
        + rng.uniform(-0.03, 0.03, (m, 1)) * (z ** 2 - 0.5)
    gain = np.clip(gain, 0.8, 1.2).astype(np.float32)
    gain[:, _B9] *= rng.uniform(0.45, 0.75, m).astype(np.float32)
    gain[:, _B10] *= rng.uniform(0.01, 0.04, m).astype(np.float32)
    haze = rng.uniform(0.0, 0.06, (m, 1)) * (_WL[None] / _WL[0]) ** -rng.uniform(1.0, 2.5, (m, 1))
    haze[:, _B10] = rng.uniform(0.0, 0.006, m)  # thin cirrus, the only thing B10 sees over most surfaces
    reflectance = surface * gain[:, :, None, None] + haze.astype(np.float32)[:, :, None, None]

    # Outliers: a small cloud in about a third of the images (3-15% of it), and rare glint pixels.
    cloudy = rng.random(m) < 0.35
    cloud = _cover(_field(rng, m, _u(rng, m, 1.5, 3)), _u(rng, m, 0.03, 0.15), edge=0.6) * cloudy[:, None, None]
    cloud_spec = _CLOUD * rng.uniform(0.9, 1.6, (m, 1)).astype(np.float32)
    reflectance += cloud[:, None] * (cloud_spec[:, :, None, None] - reflectance)
    glint = (rng.random((m, SIZE, SIZE)) < 0.003) * rng.uniform(0.4, 1.2, (m, SIZE, SIZE))
    reflectance += glint.astype(np.float32)[:, None] * (1 - 0.5 * (_Z[None, :, None, None] + 1) / 2)

    # Sensor noise: a floor plus a part proportional to the signal, independent per pixel and band.
    noise = rng.standard_normal(reflectance.shape, dtype=np.float32)
    reflectance += noise * (0.006 + 0.03 * np.abs(reflectance))
    return np.clip(np.rint(reflectance / SCALE_FACTOR), 0, MAX_VALUE).astype(np.uint16)


def _balanced_labels(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % classes).astype(np.int64)


def generate_spectral(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic 13-band images: (images uint16 (n, 13, 32, 32) reflectance x 10,000, labels int64 (n,)).

    Labels index :data:`SPECTRAL_CLASSES` and are balanced (counts differ by at most one); the same
    ``(n, seed)`` gives the same bytes. Generated in chunks so memory stays small."""
    n, seed = int(n), int(seed)
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    labels = _balanced_labels(np.random.default_rng([seed, 0]), n, len(SPECTRAL_CLASSES))
    images = np.empty((n, len(SPECTRAL_BANDS), SIZE, SIZE), np.uint16)
    for chunk, start in enumerate(range(0, n, _CHUNK)):
        rng = np.random.default_rng([seed, 1, chunk])
        images[start:start + _CHUNK] = _render_chunk(rng, labels[start:start + _CHUNK])
    return images, labels


def spectral_splits_arrays(train: int = 5000, test: int = 1000, seed: int = 0) -> dict:
    """Train and test arrays: ``images``/``labels`` (train), ``test_images``/``test_labels``, ``classes``.

    Train uses generator seed ``2 seed`` and test ``2 seed + 1``, so no two (split, seed) pairs share a seed."""
    images, labels = generate_spectral(train, 2 * int(seed))
    test_images, test_labels = generate_spectral(test, 2 * int(seed) + 1)
    return {"images": images, "labels": labels, "test_images": test_images, "test_labels": test_labels,
            "classes": list(SPECTRAL_CLASSES)}


@functools.lru_cache(maxsize=2)
def _spectral_arrays(train: int, test: int, seed: int) -> tuple[dict, DatasetStats]:
    """The arrays and the train split's statistics (both deterministic: computed once per process)."""
    arrays = spectral_splits_arrays(train, test, seed)
    source = ArraySource(arrays["images"], window=PixelWindow.full_range(np.uint16, len(SPECTRAL_BANDS)))
    return arrays, compute_stats(source, max_images=train)


@DATASETS.register("spectral")
def open_spectral(channels: int | None = None, n_train: int = 5000, n_test: int = 1000, seed: int = 0,
                  clip: tuple[float, float] = (1.0, 99.0)) -> DataSplits:
    """The ``spectral`` dataset: 13-band uint16 train and test :class:`ArraySource`, channel kind ``bands``,
    windowed at the ``clip`` percentiles of the train split's statistics (``stats`` on the train source) and
    normalised by the windowed train data's mean and std."""
    if channels not in (None, len(SPECTRAL_BANDS)):
        raise DataError(f"the spectral dataset has {len(SPECTRAL_BANDS)} bands; leave data.channels unset or set "
                        f"it to {len(SPECTRAL_BANDS)}, not {channels}")
    arrays, stats = _spectral_arrays(int(n_train), int(n_test), int(seed))
    window, (mean, std) = stats.window(clip), stats.unit_mean_std(clip)
    train = ArraySource(arrays["images"], labels=arrays["labels"], classes=SPECTRAL_CLASSES, name="spectral/train",
                        window=window, mean=mean, std=std)
    test = ArraySource(arrays["test_images"], labels=arrays["test_labels"], classes=SPECTRAL_CLASSES,
                       name="spectral/test", window=window, mean=mean, std=std)
    train.stats = stats
    for source in (train, test):
        source.band_names, source.rgb_bands = list(SPECTRAL_BANDS), SPECTRAL_RGB_BANDS  # for display
    return DataSplits(train=train, test=test)
