"""Image hashes for deduplication: a content hash of the decoded pixels (exact duplicates, whatever the file
format) and the DCT perceptual hash (near duplicates: pHash, Zauner, "Implementation and Benchmarking of
Perceptual Image Hash Functions", 2010), with the candidate pairs within a Hamming distance found by
splitting the 64 bits into bands (two hashes within distance t agree on at least one of t + 1 bands).

pHash alone is not robust to crops (a 3-pixel crop of a 64-pixel picture moved it by 10-22 bits of 64), so each
image also gets the hashes of its centre crops (:data:`CENTRE_CROPS` of each side): a lightly cropped copy's
full hash is close to one of its original's centre-crop hashes. Two images are as far apart as the closest of
their full hash to the other's full or centre-crop hashes (:func:`multi_crop_pairs`).
"""
from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
_SIDE, _LOW = 32, 8  # pHash: the image at 32 x 32, its 8 x 8 lowest DCT frequencies
CENTRE_CROPS = (0.03, 0.06, 0.1)  # fractions of each side cut off for the centre-crop hashes


def content_hash(image: torch.Tensor) -> str:
    """SHA-256 of the decoded pixels and their shape: equal for byte-different files of the same pixels."""
    array = np.ascontiguousarray(image.numpy())
    return hashlib.sha256(f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()


def _dct_matrix(n: int) -> torch.Tensor:
    k, i = torch.arange(n, dtype=torch.float64)[:, None], torch.arange(n, dtype=torch.float64)[None, :]
    m = torch.cos(torch.pi * (2 * i + 1) * k / (2 * n)) * (2.0 / n) ** 0.5
    m[0] /= 2 ** 0.5
    return m


_DCT = _dct_matrix(_SIDE)


def phash(image: torch.Tensor) -> int:
    """The 64-bit DCT perceptual hash of a (C, H, W) image: luminance at 32 x 32 (antialiased), its 2-D DCT,
    the 8 x 8 lowest frequencies compared with their median (the DC term left out of the median)."""
    x = image.to(torch.float64)
    gray = (x * _LUMA.to(x)).sum(0) if x.shape[0] == 3 else x.mean(0)
    small = F.interpolate(gray[None, None], size=(_SIDE, _SIDE), mode="bilinear", antialias=True,
                          align_corners=False)[0, 0]
    low = (_DCT @ small @ _DCT.T)[:_LOW, :_LOW].reshape(-1)
    bits = (low > low[1:].median()).to(torch.int64).tolist()
    return sum(bit << position for position, bit in enumerate(bits))


def centre_crop(image: torch.Tensor, fraction: float) -> torch.Tensor:
    h, w = image.shape[-2:]
    top, left = int(round(h * fraction)), int(round(w * fraction))
    return image[..., top:h - top, left:w - left]


def multi_crop_hashes(image: torch.Tensor) -> list[int]:
    """The pHash of ``image`` and of its centre crops (:data:`CENTRE_CROPS`), the full one first."""
    return [phash(image)] + [phash(centre_crop(image, f)) for f in CENTRE_CROPS]


def multi_crop_pairs(hashes: list[list[int]], threshold: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) of image pairs i < j whose full hash is within ``threshold`` of the other's full or
    centre-crop hashes; ``hashes[i]`` is :func:`multi_crop_hashes` of image i."""
    flat = np.array([h for per_image in hashes for h in per_image], np.uint64)
    owner = np.repeat(np.arange(len(hashes)), [len(h) for h in hashes])
    full = np.concatenate([[True] + [False] * (len(h) - 1) for h in hashes]) if hashes else np.zeros(0, bool)
    best: dict[tuple[int, int], int] = {}
    for a, b, distance in near_pairs(flat, threshold):
        i, j = int(owner[a]), int(owner[b])
        if i != j and (full[a] or full[b]):
            key = (min(i, j), max(i, j))
            best[key] = min(distance, best.get(key, 64))
    return [(i, j, d) for (i, j), d in sorted(best.items())]


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise distance of uint64 arrays."""
    x = np.bitwise_xor(a.astype(np.uint64), b.astype(np.uint64))
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(-1)


def near_pairs(hashes: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) of every pair i < j of 64-bit hashes within ``threshold`` bits, through band buckets."""
    hashes = np.asarray(hashes, np.uint64)
    bands = min(64, threshold + 1)
    edges = np.linspace(0, 64, bands + 1).astype(np.int64)
    candidates: set[tuple[int, int]] = set()
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = np.uint64((1 << int(hi - lo)) - 1)
        values = (hashes >> np.uint64(lo)) & mask
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, v in enumerate(values.tolist()):
            buckets[v].append(i)
        for members in buckets.values():
            for a in range(len(members)):
                for b in range(a + 1, len(members)):
                    candidates.add((members[a], members[b]))
    if not candidates:
        return []
    pairs = np.array(sorted(candidates), np.int64)
    distance = hamming(hashes[pairs[:, 0]], hashes[pairs[:, 1]])
    keep = distance <= threshold
    return [(int(i), int(j), int(d)) for (i, j), d in zip(pairs[keep], distance[keep])]


def similar_pairs(features: torch.Tensor, threshold: float, chunk: int = 4096) -> list[tuple[int, int, float]]:
    """(i, j, cosine) of every pair i < j whose L2-normalised features have cosine similarity >= ``threshold``."""
    z = F.normalize(features.float(), dim=1)
    out = []
    for start in range(0, len(z), chunk):
        sims = z[start:start + chunk] @ z.T
        rows, cols = torch.nonzero(sims >= threshold, as_tuple=True)
        for r, c in zip(rows.tolist(), cols.tolist()):
            if start + r < c:
                out.append((start + r, c, float(sims[r, c])))
    return out
